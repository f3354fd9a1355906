//! The init containers of `spec.model.optimize`, between the model's fetch and
//! the server: the calibration rows' fetch, when there are rows, and
//! `sluice-server optimize`, which reads the fetched original and writes the
//! optimized model where the server loads it, only if it agrees with the
//! original. Its summary becomes its termination message, which `status` reads
//! ([`crate::optimization`]).

use k8s_openapi::api::core::v1::{Container, ResourceRequirements, Volume};

use super::fetch::{FetchSource, FetchTarget, fetch_container};
use super::pod::{container_security, empty_dir, mount, without_gpu};
use crate::crd::OptimizeSpec;
use crate::crd::optimize::OptimizeMode;
use crate::optimization::{OPTIMIZE_CONTAINER, SUMMARY_PATH};

/// Where the model fetcher puts the original when the model is optimized.
pub const ORIGINAL_DIR: &str = "/sluice/original";
/// The emptyDir volume of the original.
pub const ORIGINAL_VOLUME: &str = "original";
/// Where the calibration rows are fetched to.
const CALIBRATION_DIR: &str = "/sluice/calibration";
/// Where a calibration `pvc://` claim is mounted (read-only) in its fetcher.
const CALIBRATION_PVC_MOUNT: &str = "/mnt/calibration-pvc";

/// The containers and volumes optimizing adds to the pod (besides the original's
/// volume, which the model fetcher writes).
pub struct OptimizeParts {
    /// Init containers, in order, after the model's fetch.
    pub containers: Vec<Container>,
    /// Their volumes.
    pub volumes: Vec<Volume>,
}

/// The calibration fetch (if any, with the Secret `credentials_secret`) and the
/// optimizer for `optimize`, writing to `version_dir` on `threads` ONNX Runtime
/// threads (its default when `None`), with the server's `resources` less its GPU.
pub fn parts(
    optimize: &OptimizeSpec,
    credentials_secret: Option<&str>,
    version_dir: &str,
    threads: Option<u32>,
    image: &str,
    resources: &ResourceRequirements,
) -> OptimizeParts {
    let mut containers = Vec::new();
    let mut volumes = Vec::new();
    let mut args: Vec<String> = [
        "optimize",
        "--model",
        &format!("{ORIGINAL_DIR}/model.onnx"),
        "--output",
        &format!("{version_dir}/model.onnx"),
        "--mode",
        optimize.mode.as_arg(),
        "--min-agreement",
        &optimize.min_agreement().to_string(),
        "--summary",
        SUMMARY_PATH,
    ]
    .map(String::from)
    .into();
    let mut mounts = vec![
        mount(ORIGINAL_VOLUME, ORIGINAL_DIR, true, None),
        mount("model", version_dir, false, None),
        mount("tmp", "/tmp", false, None),
    ];
    if let Some(uri) = &optimize.calibration_uri {
        let file_name = if uri.ends_with(".npy") {
            "calibration.npy"
        } else {
            "calibration.csv"
        };
        volumes.push(empty_dir("calibration"));
        let fetch = fetch_container(
            &FetchTarget {
                container: "fetch-calibration",
                volume: "calibration",
                pvc_volume: "calibration-pvc",
                pvc_mount: CALIBRATION_PVC_MOUNT,
                dest: CALIBRATION_DIR,
                file_name: Some(file_name),
            },
            &FetchSource {
                uri,
                sha256: optimize.calibration_sha256.as_deref(),
                credentials_secret,
            },
            image,
            resources,
        );
        volumes.extend(fetch.pvc);
        containers.push(fetch.container);
        mounts.push(mount("calibration", CALIBRATION_DIR, true, None));
        // INT8 static calibrates on the rows (and measures on them); the other
        // modes measure on them.
        let flag = match optimize.mode {
            OptimizeMode::Int8Static => "--calibration",
            OptimizeMode::Int8Dynamic | OptimizeMode::Fp16 => "--eval",
        };
        args.extend([flag.into(), format!("{CALIBRATION_DIR}/{file_name}")]);
    }
    if let Some(column) = &optimize.label_column {
        args.extend(["--label-column".into(), column.clone()]);
    }
    if let Some(level) = optimize.graph_optimization {
        args.extend(["--graph-optimization".into(), level.as_arg().into()]);
    }
    if !optimize.keep_fp32.is_empty() {
        args.extend(["--keep-fp32".into(), optimize.keep_fp32.join(",")]);
    }
    if let Some(threads) = threads {
        args.extend(["--threads".into(), threads.to_string()]);
    }
    containers.push(Container {
        name: OPTIMIZE_CONTAINER.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        resources: Some(without_gpu(resources)),
        security_context: Some(container_security()),
        termination_message_path: Some(SUMMARY_PATH.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(mounts),
        ..Container::default()
    });
    OptimizeParts {
        containers,
        volumes,
    }
}
