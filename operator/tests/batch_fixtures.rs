//! `validate` and `build` of BatchInferences from the YAML fixtures in
//! `tests/fixtures/batch/`: each fixture's Job or CronJob must equal its golden
//! file (`SLUICE_BLESS=1` rewrites them after a deliberate change), and every
//! fixture must satisfy the invariants of a batch run. A fixture that names an
//! InferenceService finds it in `<fixture>.isvc.yaml`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use kube::ResourceExt;
use sluice_operator::batch::build::{Desired, build};
use sluice_operator::batch::validate::validate;
use sluice_operator::config::BuildConfig;
use sluice_operator::crd::{BatchInference, InferenceService};
use sluice_operator::names::{BATCH_LABEL, ISVC_LABEL};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/batch")
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".yaml")
                && !name.ends_with(".objects.yaml")
                && !name.ends_with(".isvc.yaml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 6, "fixtures missing in {}", dir().display());
    files
}

fn load(path: &Path) -> (BatchInference, Option<InferenceService>) {
    let batch = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let isvc_path = path.with_extension("isvc.yaml");
    let isvc = isvc_path
        .exists()
        .then(|| serde_saphyr::from_str(&std::fs::read_to_string(&isvc_path).unwrap()).unwrap());
    (batch, isvc)
}

fn built(path: &Path) -> Desired {
    let (batch, isvc) = load(path);
    let valid = validate(&batch, isvc.as_ref()).expect("fixture is valid");
    let model = valid.model.model().expect("fixture's model resolves");
    build(&valid, model, &BuildConfig::default()).unwrap()
}

fn fixture(name: &str) -> Desired {
    built(&dir().join(format!("{name}.yaml")))
}

/// The run's Job spec, in the Job or in the CronJob's template.
fn job_spec(desired: &Desired) -> &JobSpec {
    match desired {
        Desired::Run(job) => job.spec.as_ref().unwrap(),
        Desired::Schedule(cron) => cron
            .spec
            .as_ref()
            .unwrap()
            .job_template
            .spec
            .as_ref()
            .unwrap(),
    }
}

fn pod(desired: &Desired) -> &PodSpec {
    job_spec(desired).template.spec.as_ref().unwrap()
}

fn batch_container(desired: &Desired) -> &Container {
    &pod(desired).containers[0]
}

fn args(desired: &Desired) -> String {
    batch_container(desired).args.as_ref().unwrap().join(" ")
}

#[test]
fn objects_match_golden_files() {
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    for path in fixtures() {
        let got = serde_saphyr::to_string(&built(&path)).unwrap();
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
fn every_fixture_builds_an_indexed_job_of_shards_that_is_retried_and_locked_down() {
    for path in fixtures() {
        let ctx = path.display().to_string();
        let (batch, _) = load(&path);
        let spec = &batch.spec;
        let desired = built(&path);
        let (meta, template_meta) = match &desired {
            Desired::Run(job) => {
                assert!(spec.schedule.is_none(), "{ctx}");
                (&job.metadata, job.metadata.clone())
            }
            Desired::Schedule(cron) => {
                let cron_spec = cron.spec.as_ref().unwrap();
                assert_eq!(Some(&cron_spec.schedule), spec.schedule.as_ref(), "{ctx}");
                assert_eq!(
                    cron_spec.concurrency_policy.as_deref(),
                    Some("Forbid"),
                    "{ctx}"
                );
                assert_eq!(cron_spec.suspend, Some(spec.suspend), "{ctx}");
                (
                    &cron.metadata,
                    cron_spec.job_template.metadata.clone().unwrap(),
                )
            }
        };
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("BatchInference", batch.name_any().as_str(), Some(true)),
            "{ctx}"
        );
        assert_eq!(
            template_meta.labels.as_ref().unwrap().get(BATCH_LABEL),
            Some(&batch.name_any()),
            "{ctx}"
        );

        let job = job_spec(&desired);
        assert_eq!(job.completion_mode.as_deref(), Some("Indexed"), "{ctx}");
        assert_eq!(job.completions, Some(spec.parallelism), "{ctx}");
        assert_eq!(job.parallelism, Some(spec.parallelism), "{ctx}");
        assert_eq!(job.backoff_limit_per_index, Some(spec.retries), "{ctx}");
        assert_eq!(
            job.pod_replacement_policy.as_deref(),
            Some("Failed"),
            "{ctx}"
        );
        assert_eq!(
            job.active_deadline_seconds, spec.active_deadline_seconds,
            "{ctx}"
        );
        let rule = &job.pod_failure_policy.as_ref().unwrap().rules[0];
        assert_eq!(rule.action, "Ignore", "{ctx}");
        assert_eq!(
            rule.on_pod_conditions.as_ref().unwrap()[0].type_,
            "DisruptionTarget",
            "{ctx}"
        );

        let pod_labels = job
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(
            pod_labels.get(BATCH_LABEL),
            Some(&batch.name_any()),
            "{ctx}"
        );
        assert!(
            !pod_labels.contains_key(ISVC_LABEL),
            "{ctx}: a batch pod must not look like a serving pod"
        );
        let pod = pod(&desired);
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"), "{ctx}");
        assert_eq!(pod.automount_service_account_token, Some(false), "{ctx}");
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true),
            "{ctx}"
        );
        let init = pod.init_containers.as_ref().unwrap();
        assert_eq!(init[0].name, "fetch-model", "{ctx}");
        let batch_container = batch_container(&desired);
        assert_eq!(batch_container.name, "batch", "{ctx}");
        for container in init.iter().chain([batch_container]) {
            let security = container.security_context.as_ref().unwrap();
            assert_eq!(security.read_only_root_filesystem, Some(true), "{ctx}");
            assert_eq!(security.allow_privilege_escalation, Some(false), "{ctx}");
        }
        assert_eq!(
            batch_container.termination_message_path.as_deref(),
            Some("/tmp/batch-summary.json"),
            "{ctx}"
        );
        let args = args(&desired);
        assert!(
            args.starts_with("batch --model /models/model --input "),
            "{ctx}: {args}"
        );
        assert!(
            args.contains(&format!(
                " --shard $(JOB_COMPLETION_INDEX) --shards {} ",
                spec.parallelism
            )),
            "{ctx}: {args}"
        );
        assert!(args.contains("/$(SLUICE_BATCH_RUN) "), "{ctx}: {args}");
        assert!(
            args.ends_with("--summary-file /tmp/batch-summary.json --metrics-address 0.0.0.0:8080"),
            "{ctx}: {args}"
        );
        let run_env = &batch_container.env.as_ref().unwrap()[0];
        assert_eq!(run_env.name, "SLUICE_BATCH_RUN");
        assert_eq!(
            run_env
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['batch.kubernetes.io/job-name']",
            "{ctx}"
        );

        // Every mount names a volume, and every volume is mounted.
        let volumes: BTreeSet<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        let mounted: BTreeSet<&str> = init
            .iter()
            .chain([batch_container])
            .flat_map(|c| c.volume_mounts.iter().flatten())
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(volumes, mounted, "{ctx}");
    }
}

#[test]
fn the_exact_command_of_a_one_time_run() {
    let desired = fixture("once-s3");
    let Desired::Run(job) = &desired else {
        panic!("a one-time run is a Job");
    };
    assert!(job.name_any().starts_with("fraud-backfill-"));
    assert_eq!(
        args(&desired),
        "batch --model /models/model --input s3://data/transactions/2026-01-15/ \
         --output s3://predictions/fraud/$(SLUICE_BATCH_RUN) --format csv --output-format jsonl \
         --batch-size 512 --shard $(JOB_COMPLETION_INDEX) --shards 4 --id-column transaction_id \
         --rows-per-part 50000 --max-reject-ratio 0.01 \
         --summary-file /tmp/batch-summary.json --metrics-address 0.0.0.0:8080"
    );
    let annotations = job.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        annotations["serving.sluice.dev/output"],
        "s3://predictions/fraud/"
    );
    let container = batch_container(&desired);
    assert_eq!(
        container.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "s3-data",
        "the data's credentials reach the batch container"
    );
}

#[test]
fn a_dollar_the_user_wrote_is_not_expanded() {
    let args = args(&fixture("once-file"));
    assert!(
        args.contains("--output file:///var/lib/sluice/batch/iris/out$$(HOME)/$(SLUICE_BATCH_RUN)"),
        "{args}"
    );
}

#[test]
fn pvc_locations_are_mounted_claims_and_the_server_gets_local_paths() {
    let one = fixture("pvc");
    let command = args(&one);
    assert!(
        command.contains(
            "--input /data/ml-data/batch/in --output /data/ml-data/batch/out/$(SLUICE_BATCH_RUN)"
        ),
        "{command}"
    );
    let claims: Vec<(String, Option<bool>)> = pod(&one)
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| (v.name.clone(), c.read_only))
        })
        .collect();
    assert_eq!(
        claims,
        [
            ("pvc".to_string(), Some(true)),
            ("data-0".to_string(), None)
        ],
        "the fetcher's read-only claim, and one read-write claim for input and output"
    );

    let two = fixture("pvc-two-claims");
    let command = args(&two);
    assert!(
        command.contains("--input /data/landing/churn/2026-01-15.jsonl --output /data/predictions.ml/churn/$(SLUICE_BATCH_RUN)"),
        "{command}"
    );
    let mounts: Vec<(String, String, Option<bool>)> = batch_container(&two)
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name.starts_with("data-"))
        .map(|m| (m.name.clone(), m.mount_path.clone(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            (
                "data-0".to_string(),
                "/data/landing".to_string(),
                Some(true)
            ),
            (
                "data-1".to_string(),
                "/data/predictions.ml".to_string(),
                None
            )
        ]
    );
}

#[test]
fn a_reference_runs_the_inference_services_optimized_model_with_its_profile_on_its_gpu() {
    let desired = fixture("isvc-ref");
    let pod = pod(&desired);
    let init: Vec<&str> = pod
        .init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(init, ["fetch-model", "optimize-model", "fetch-profile"]);
    let fetch = &pod.init_containers.as_ref().unwrap()[0];
    assert_eq!(
        fetch.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "s3-models",
        "the InferenceService's credentials fetch its model"
    );
    let container = batch_container(&desired);
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/sluice-dev/sluice-server:0.1.0-cuda")
    );
    let limits = container
        .resources
        .as_ref()
        .unwrap()
        .limits
        .as_ref()
        .unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    assert!(args(&desired).contains(" --threads 4 "));
    let env: Vec<(&str, Option<&str>)> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        env,
        [
            ("SLUICE_BATCH_RUN", None),
            ("ORT_ARENA", Some("1")),
            ("SLUICE_LOG", Some("debug"))
        ]
    );
    let config = &job_spec(&desired)
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()["serving.sluice.dev/model-config"];
    assert_eq!(
        config,
        "device: cuda\nmonitoring:\n  profile: monitoring/profile.json\n"
    );
}

#[test]
fn the_sample_is_valid_and_runs_the_iris_sample_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap();
    let batch: BatchInference =
        serde_saphyr::from_str(&read("serving_v1alpha1_batchinference_iris.yaml")).unwrap();
    let isvc: InferenceService =
        serde_saphyr::from_str(&read("serving_v1alpha1_inferenceservice_iris.yaml")).unwrap();
    let valid = validate(&batch, Some(&isvc)).expect("the sample is valid");
    let model = valid.model.model().expect("the sample's model resolves");
    assert_eq!(model.model.storage_uri, isvc.spec.model.storage_uri);
    assert_eq!(model.model.sha256, isvc.spec.model.sha256);
}
