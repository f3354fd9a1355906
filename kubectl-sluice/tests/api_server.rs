//! `kubectl-sluice` against a real control plane: upstream etcd and
//! kube-apiserver (the operator's test harness, `operator/tests/support`), the
//! release `sluice-operator` binary as users run it, and a real `sluice-server`
//! behind the API server's service proxy. Every command runs as the built
//! binary with the kubeconfig the harness writes, as `kubectl sluice` would.
//!
//! Ignored by a plain `cargo test`; run with
//! `SLUICE_K8S_BIN=$(e2e/cluster/build-bins.sh --cached) cargo test -p kubectl-sluice -- --include-ignored`
//! after `make build` (release `sluice-server` and `sluice-operator`;
//! `SLUICE_SERVER_BIN` and `SLUICE_OPERATOR_BIN` override them).

#[allow(dead_code)]
#[path = "../../operator/tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kubectl_sluice::commands::CommandView;
use kubectl_sluice::history::HistoryView;
use kubectl_sluice::profile::ProfileReport;
use kubectl_sluice::status::StatusView;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_operator::crd::InferenceService;
use sluice_operator::crd::rollout::RolloutPhase;
use sluice_operator::names::{ISVC_LABEL, REVISION_LABEL};
use support::{ApiServer, TIMEOUT, eventually, free_port, install_crds, repo_root};

const NS: &str = "plugin";
/// The field manager a GitOps tool applies the spec with.
const GITOPS: &str = "argocd-controller";

#[test]
#[ignore = "needs the upstream binaries (SLUICE_K8S_BIN) and the release sluice-server and sluice-operator"]
fn kubectl_sluice_against_a_real_api_server() {
    let server = ApiServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = server.client().await;
        install_crds(&client).await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let plugin = Plugin {
            kubeconfig: server.kubeconfig.clone(),
        };
        let scratch =
            std::env::temp_dir().join(format!("kubectl-sluice-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();

        // Without an operator: a status as the operator writes it, read back.
        status_history_and_annotation(&client, &plugin).await;
        profile(&client, &plugin, &scratch).await;

        // With the operator: commands it acts on, and predictions.
        let operator = start_operator(&server.kubeconfig, &scratch);
        rollout_commands_and_predict(&client, &plugin, &scratch).await;
        drop(operator);
        let _ = std::fs::remove_dir_all(&scratch);
    });
}

/// The plugin binary, run with the harness's kubeconfig.
struct Plugin {
    kubeconfig: PathBuf,
}

/// What one run printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Plugin {
    /// `kubectl-sluice --kubeconfig <harness> -n plugin ARGS`, echoed to the test
    /// output as a user would see it.
    async fn run(&self, args: &[&str]) -> Run {
        let kubeconfig = self.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let shown = args.join(" ");
        let output: Output = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["-n", NS])
                .args(&args)
                .env_remove("KUBECONFIG")
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let run = Run {
            ok: output.status.success(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        println!("$ kubectl sluice {shown}\n{}{}", run.stdout, run.stderr);
        run
    }

    /// Runs and expects success.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(run.ok, "kubectl sluice {args:?} failed: {}", run.stderr);
        run.stdout
    }

    /// Runs `-o json` and parses the document.
    async fn json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> T {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        let out = self.ok(&args).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }
}

fn isvcs(client: &Client) -> Api<InferenceService> {
    Api::namespaced(client.clone(), NS)
}

/// Applies an InferenceService the way Argo CD does (server-side apply, its
/// own field manager), so that the spec has an owner to keep.
async fn gitops_apply(client: &Client, name: &str, spec: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &ApiResource::erase::<InferenceService>(&()),
    );
    let manifest: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "serving.sluice.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }))
    .unwrap();
    api.patch(
        name,
        &PatchParams::apply(GITOPS).force(),
        &Patch::Apply(&manifest),
    )
    .await
    .unwrap();
}

/// A revision's Deployment as the operator labels it, with `ready` of
/// `replicas` pods ready (there is no Deployment controller here).
async fn deployment(client: &Client, isvc: &str, revision: &str, replicas: i32, ready: i32) {
    let labels = json!({ISVC_LABEL: isvc, REVISION_LABEL: revision});
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": format!("{isvc}-{revision}"), "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                         "spec": {"containers": [{"name": "server", "image": "sluice-server"}]}},
        },
    }))
    .unwrap();
    let api: Api<Deployment> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &d).await.unwrap();
    mark_ready(&api, &format!("{isvc}-{revision}"), ready).await;
}

/// Writes what the Deployment controller would: `ready` pods ready.
async fn mark_ready(deployments: &Api<Deployment>, name: &str, ready: i32) {
    let generation = deployments.get(name).await.unwrap().metadata.generation;
    deployments
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"observedGeneration": generation, "replicas": ready,
                "updatedReplicas": ready, "readyReplicas": ready, "availableReplicas": ready}}),
            ),
        )
        .await
        .unwrap();
}

/// The managed-fields entries that own part of the spec.
fn spec_owners(object: &Value) -> Vec<Value> {
    object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["fieldsV1"].get("f:spec").is_some())
        .cloned()
        .collect()
}

async fn raw(client: &Client, name: &str) -> Value {
    serde_json::to_value(isvcs(client).get(name).await.unwrap()).unwrap()
}

/// `status`, `history` and a command on an InferenceService whose status is
/// written as the operator writes it (the canary fixture, with three checks).
async fn status_history_and_annotation(client: &Client, plugin: &Plugin) {
    gitops_apply(
        client,
        "fraud",
        json!({"model": {"storageUri": "file:///opt/sluice/models/fraud/2/model.onnx", "version": "2"}}),
    )
    .await;
    let fixture: InferenceService = serde_saphyr::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/canary.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    // The canary fixture's status, as the operator would write it for this object.
    let mut status = fixture.status.unwrap();
    status.observed_generation = isvcs(client)
        .get("fraud")
        .await
        .unwrap()
        .metadata
        .generation;
    status.url = Some(format!("http://fraud.{NS}.svc.cluster.local:8080"));
    status.selector = Some(format!("{ISVC_LABEL}=fraud"));
    // The API server checks the status against the CRD's schema.
    isvcs(client)
        .patch_status(
            "fraud",
            &PatchParams {
                field_manager: Some("sluice-operator".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
    deployment(client, "fraud", "5c1e9a07d2", 2, 2).await;
    deployment(client, "fraud", "4f9a2c71d0", 1, 1).await;

    let text = plugin.ok(&["status", "fraud"]).await;
    for line in [
        "Phase:        Progressing",
        "5c1e9a07d2  stable  75%     2/2",
        "4f9a2c71d0  canary  25%     1/1",
        "Step:      step 1 of 2 (25%)",
        "error-rate             0.0000  <= 0.0200 (max of 2x and +0.02 over stable 0.0000)  Pass",
        "p99-latency-vs-stable  0.0049  <= 0.0250 (max of 2x and +0.02 over stable 0.0050)  Pass",
        "prediction-agreement   -       psi <= 0.2000 unless p >= 0.001                     NoData   the canary made 35 predictions in 120s, fewer than minRows 200",
        "Autoscaling:  2 wanted by signal MinReplicas (mode Sluice)",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let status: StatusView = plugin.json(&["status", "fraud"]).await;
    assert_eq!(
        (status.name.as_str(), status.namespace.as_str()),
        ("fraud", NS)
    );
    let checks = &status.rollout.as_ref().unwrap().checks;
    assert_eq!(
        checks
            .iter()
            .map(|c| (c.name.as_str(), c.value))
            .collect::<Vec<_>>(),
        [
            ("error-rate", Some(0.0)),
            ("p99-latency-vs-stable", Some(0.0049)),
            ("prediction-agreement", None)
        ]
    );
    assert_eq!(status.revisions[1].ready_replicas, Some(1));

    let text = plugin.ok(&["history", "fraud"]).await;
    assert!(
        text.contains("5c1e9a07d2*  Promoted  2026-11-30T09:13:41Z  file:///opt/sluice/models/iris/1/model.onnx  1        first revision ready"),
        "{text}"
    );
    let history: HistoryView = plugin.json(&["history", "fraud"]).await;
    assert_eq!(history.entries.len(), 1);

    // promote: the annotation and nothing else; the spec's owner keeps it.
    let before = raw(client, "fraud").await;
    let text = plugin.ok(&["promote", "fraud"]).await;
    assert!(
        text.starts_with("inferenceservice plugin/fraud: promote requested (serving.sluice.dev/rollout=promote)\n"),
        "{text}"
    );
    let after = raw(client, "fraud").await;
    assert_eq!(after["spec"], before["spec"], "the spec is unchanged");
    assert_eq!(
        after["metadata"]["generation"], before["metadata"]["generation"],
        "no new generation"
    );
    let mut annotations = before["metadata"]["annotations"].clone();
    if annotations.is_null() {
        annotations = json!({});
    }
    annotations["serving.sluice.dev/rollout"] = json!("promote");
    assert_eq!(after["metadata"]["annotations"], annotations);
    assert_eq!(spec_owners(&after), spec_owners(&before));
    let owners: Vec<Value> = spec_owners(&after)
        .iter()
        .map(|m| m["manager"].clone())
        .collect();
    assert_eq!(owners, [GITOPS]);
    let ours: Vec<&Value> = after["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["manager"] == "kubectl-sluice")
        .collect();
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0]["operation"], "Update");
    assert_eq!(
        ours[0]["fieldsV1"],
        // `.`: the annotations map itself, which the command created.
        json!({"f:metadata": {"f:annotations": {".": {}, "f:serving.sluice.dev/rollout": {}}}})
    );

    // No operator runs yet: --wait gives up, and says why it might be.
    let run = plugin
        .run(&["promote", "fraud", "--wait", "--timeout", "2s"])
        .await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("timed out after 2s")
            && run.stderr.contains("is the operator running?"),
        "{}",
        run.stderr
    );
    // A second command replaces the pending one, and says so.
    let view: CommandView = plugin.json(&["abort", "fraud"]).await;
    assert_eq!(view.replaced.as_deref(), Some("promote"));
    assert_eq!(view.annotation, "serving.sluice.dev/rollout=abort");
    assert!(!view.waited);

    // Leave nothing for the operator started later.
    isvcs(client)
        .delete("fraud", &DeleteParams::default())
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    for name in ["fraud-5c1e9a07d2", "fraud-4f9a2c71d0"] {
        deployments
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
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

/// A fixture model or data file (`make deps` generates them).
fn fixture_model(path: &str) -> PathBuf {
    let file = repo_root().join("server/fixtures/models").join(path);
    assert!(file.exists(), "{} missing: run `make deps`", file.display());
    file
}

/// `profile`: the model a file:// URI names, fetched and profiled by the real
/// `sluice-server`; a URI only the nodes can read is refused.
async fn profile(client: &Client, plugin: &Plugin, scratch: &Path) {
    let model = fixture_model("cancer/1/model.onnx");
    let data = fixture_model("cancer/train.csv");
    gitops_apply(
        client,
        "cancer",
        json!({"model": {"storageUri": format!("file://{}", model.display())}}),
    )
    .await;
    let output = scratch.join("profile.json");
    let server = server_bin();
    let args = [
        "profile",
        "cancer",
        "--data",
        data.to_str().unwrap(),
        "--label-column",
        "target",
        "--output-file",
        output.to_str().unwrap(),
        "--server-bin",
        server.to_str().unwrap(),
    ];
    let text = plugin.ok(&args).await;
    assert!(text.contains("profileSha256: "), "{text}");
    let report: ProfileReport = plugin.json(&args).await;
    let written = std::fs::read(&output).unwrap();
    let digest: String = Sha256::digest(&written)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(report.sha256, digest);
    assert_eq!(report.model_source, "spec.model");
    assert_eq!(report.model, format!("file://{}", model.display()));
    assert_eq!(report.features, Some(30));
    let profile: Value = serde_json::from_slice(&written).unwrap();
    assert_eq!(profile["rows"].as_u64(), report.rows);
    assert!(report.rows.unwrap() > 100);

    gitops_apply(
        client,
        "cancer",
        json!({"model": {"storageUri": "pvc://models/cancer/1/model.onnx"}}),
    )
    .await;
    let run = plugin.run(&args).await;
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("pvc:// is a volume claim only pods mount")
            && run.stderr.contains("--model-file"),
        "{}",
        run.stderr
    );
    isvcs(client)
        .delete("cancer", &DeleteParams::default())
        .await
        .unwrap();
}

/// A child process, killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The release `sluice-operator` as a user runs it: no arguments but a single
/// replica's (no leader election, a free metrics port), no Prometheus (so a
/// rollout holds at its first analysis until promoted by hand).
fn start_operator(kubeconfig: &Path, scratch: &Path) -> Killed {
    let bin = std::env::var_os("SLUICE_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/sluice-operator"));
    assert!(bin.exists(), "{} missing: run `make build`", bin.display());
    let child = Command::new(bin)
        .args(["--leader-elect", "false", "--metrics-addr"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("KUBECONFIG", kubeconfig)
        .env_remove("PROMETHEUS_URL")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(scratch.join("operator.log")).unwrap())
        .spawn()
        .unwrap();
    Killed(child)
}

/// This machine's address that the API server can dial and the Endpoints API
/// accepts (not loopback or link-local): the one of the default route, else
/// the first `hostname -I` lists.
fn host_ip() -> IpAddr {
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(_) => false,
    };
    let routed = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("203.0.113.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(usable);
    routed
        .or_else(|| {
            let out = Command::new("hostname").arg("-I").output().ok()?;
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .find(usable)
        })
        .expect("this machine has no IPv4 address other than loopback")
}

/// With the operator running: a canary it holds (no Prometheus), `promote
/// --wait`, `rollback --wait`, `history`; then `predict` through the service
/// proxy to a real `sluice-server`.
async fn rollout_commands_and_predict(client: &Client, plugin: &Plugin, scratch: &Path) {
    let model = format!("file://{}", fixture_model("iris/1/model.onnx").display());
    let spec = |version: &str| json!({"model": {"storageUri": model, "version": version}});
    gitops_apply(client, "iris", spec("1")).await;
    let api = isvcs(client);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let revision1 = eventually("the operator reconciled iris", || async {
        api.get("iris").await.ok()?.status?.revision
    })
    .await;
    eventually("revision 1's Deployment exists", || async {
        deployments
            .get_opt(&format!("iris-{revision1}"))
            .await
            .ok()?
    })
    .await;
    mark_ready(&deployments, &format!("iris-{revision1}"), 2).await;
    eventually("revision 1 is stable", || async {
        let s = api.get("iris").await.ok()?.status?;
        (s.stable_revision.as_deref() == Some(revision1.as_str())).then_some(())
    })
    .await;

    gitops_apply(client, "iris", spec("2")).await;
    let revision2 = eventually("version 2 rolls out", || async {
        let r = api.get("iris").await.ok()?.status?.revision?;
        (r != revision1).then_some(r)
    })
    .await;
    let deployment2 = format!("iris-{revision2}");
    eventually("the canary's Deployment exists", || async {
        deployments.get_opt(&deployment2).await.ok()?
    })
    .await;
    mark_ready(&deployments, &deployment2, 1).await;
    eventually("the canary runs", || async {
        let s = api.get("iris").await.ok()?.status?;
        (s.canary_revision.as_deref() == Some(revision2.as_str()) && s.ready_replicas >= 3)
            .then_some(())
    })
    .await;
    let status: StatusView = plugin.json(&["status", "iris"]).await;
    assert_eq!(
        status
            .revisions
            .iter()
            .map(|r| (r.revision.as_str(), r.role.as_str()))
            .collect::<Vec<_>>(),
        [
            (revision1.as_str(), "stable"),
            (revision2.as_str(), "canary")
        ]
    );
    plugin.ok(&["status", "iris"]).await;

    // pause and resume, acted on by the operator.
    let text = plugin
        .ok(&["pause", "iris", "--wait", "--timeout", "30s"])
        .await;
    assert!(
        text.contains(&format!("Rollout:  {revision2} Paused\n")),
        "{text}"
    );
    let phase = |isvc: InferenceService| isvc.status.and_then(|s| s.rollout).map(|r| r.phase);
    assert_eq!(
        phase(api.get("iris").await.unwrap()),
        Some(RolloutPhase::Paused)
    );
    plugin.ok(&["status", "iris"]).await;
    let view: CommandView = plugin
        .json(&["resume", "iris", "--wait", "--timeout", "30s"])
        .await;
    assert!(view.waited && view.acted && view.expectation.is_none());
    assert_eq!(view.rollout.unwrap().phase, "Progressing");

    let text = plugin
        .ok(&["promote", "iris", "--wait", "--timeout", "30s"])
        .await;
    assert!(
        text.contains("the operator acted on it and removed the annotation"),
        "{text}"
    );
    let isvc = api.get("iris").await.unwrap();
    assert!(
        !isvc
            .annotations()
            .contains_key("serving.sluice.dev/rollout")
    );
    eventually("promotion scales the canary to full size", || async {
        let d = deployments.get(&deployment2).await.ok()?;
        (d.spec?.replicas == Some(2)).then_some(())
    })
    .await;
    mark_ready(&deployments, &deployment2, 2).await;
    eventually("revision 2 is stable", || async {
        let s = api.get("iris").await.ok()?.status?;
        (s.stable_revision.as_deref() == Some(revision2.as_str()) && s.rollout?.phase.finished())
            .then_some(())
    })
    .await;
    let history: HistoryView = plugin.json(&["history", "iris"]).await;
    assert_eq!(
        history
            .entries
            .iter()
            .map(|e| (
                e.revision.as_str(),
                e.outcome.as_str(),
                e.version.as_deref()
            ))
            .collect::<Vec<_>>(),
        [
            (revision1.as_str(), "Promoted", Some("1")),
            (revision2.as_str(), "Promoted", Some("2"))
        ]
    );
    plugin.ok(&["history", "iris"]).await;

    let before = raw(client, "iris").await;
    let text = plugin
        .ok(&["rollback", "iris", "--wait", "--timeout", "30s"])
        .await;
    assert!(
        text.contains(&format!(
            "expected: revision {revision1} ({model}) serves again"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Rollback:  revision {revision1} ({model}) serves in place of the spec's"
        )),
        "{text}"
    );
    let rollback = api.get("iris").await.unwrap().status.unwrap().rollback;
    assert_eq!(rollback.map(|r| r.revision), Some(revision1.clone()));
    let after = raw(client, "iris").await;
    assert_eq!(
        after["spec"], before["spec"],
        "a rollback never writes the spec"
    );
    assert_eq!(spec_owners(&after)[0]["manager"], GITOPS);
    plugin.ok(&["status", "iris"]).await;

    // predict: a real sluice-server behind the Service, reached through the
    // API server's service proxy. There is no kubelet or EndpointSlice
    // controller here, so the pod and the Endpoints the proxy resolves are
    // written as they would be.
    let repository = scratch.join("repository/iris/1");
    std::fs::create_dir_all(&repository).unwrap();
    std::fs::copy(
        fixture_model("iris/1/model.onnx"),
        repository.join("model.onnx"),
    )
    .unwrap();
    let ip = host_ip();
    let port = free_port();
    let _server = Killed(
        Command::new(server_bin())
            .args(["serve", "--host", &ip.to_string(), "--model-repository"])
            .arg(scratch.join("repository"))
            .args(["--http-port", &port.to_string()])
            .args(["--grpc-port", &free_port().to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.join("server.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "iris-server"},
        "spec": {"containers": [{"name": "server", "image": "sluice-server"}]},
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status(
        "iris-server",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "podIP": ip.to_string(),
                                        "podIPs": [{"ip": ip.to_string()}]}}),
        ),
    )
    .await
    .unwrap();
    let endpoints: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "iris"},
        "subsets": [{
            "addresses": [{"ip": ip.to_string(),
                           "targetRef": {"kind": "Pod", "namespace": NS, "name": "iris-server", "uid": pod.uid()}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        }],
    }))
    .unwrap();
    Api::<Endpoints>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &endpoints)
        .await
        .unwrap();

    // The server loads the model in the background: retry until it answers.
    let deadline = Instant::now() + TIMEOUT;
    let text = loop {
        let run = plugin.run(&["predict", "iris"]).await;
        if run.ok {
            break run.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "predict never succeeded: {}",
            run.stderr
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        text.starts_with(
            "sent a sample: input float_input FP32 [1,4] of zeros\nmodel iris version 1 answered:\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\nlabel          INT64     [1]     ["),
        "{text}"
    );
    assert!(
        text.contains("\nprobabilities  FP32      [1, 3]  ["),
        "{text}"
    );

    let input = scratch.join("setosa.json");
    std::fs::write(
        &input,
        r#"{"inputs": [{"name": "float_input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}"#,
    )
    .unwrap();
    let text = plugin
        .ok(&["predict", "iris", "--input", input.to_str().unwrap()])
        .await;
    assert!(
        text.contains("\nlabel          INT64     [1]     [0]\n"),
        "{text}"
    );
    let response: Value = plugin
        .json(&["predict", "iris", "--input", input.to_str().unwrap()])
        .await;
    assert_eq!(response["model_name"], "iris");
    assert_eq!(response["outputs"][0]["data"], json!([0]));

    // The server's own error comes through the proxy.
    let run = plugin.run(&["predict", "iris", "--model", "nope"]).await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("HTTP 404") && run.stderr.contains("nope"),
        "{}",
        run.stderr
    );
}
