//! Integration tests against a real kube-apiserver and etcd (see `support`): the
//! committed CRDs install and reject bad manifests, and the controller creates,
//! updates, reports on and deletes what serves an InferenceService, writing nothing
//! when nothing changed, and runs BatchInferences (`api_server/batch.rs`).
//!
//! One control plane serves every scenario (each in its own namespace), so this
//! test has its own `main` (`harness = false`) that starts it once and stops it last.

mod support;

#[path = "api_server/batch.rs"]
mod batch;
#[path = "api_server/scoped.rs"]
mod scoped;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sluice_operator::config::{BuildConfig, WatchScope};
use sluice_operator::crd::{InferenceService, ServingPolicy};
use sluice_operator::leader::LeaseLock;
use sluice_operator::metrics::Metrics;
use sluice_operator::names::{self, ISVC_LABEL, REVISION_LABEL};
use sluice_operator::reconcile::Context;
use support::{ApiServer, TIMEOUT, eventually, install_crds};
use tokio::sync::oneshot;

fn main() {
    // Like a `#[ignore]`d test: a plain `cargo test` skips it, `make test-operator`
    // passes `--include-ignored` with the binaries in SLUICE_K8S_BIN.
    let included = std::env::args().any(|a| a == "--include-ignored" || a == "--ignored");
    if !included {
        println!("test api_server ... ignored, {}", support::NEEDS_BINARIES);
        println!("\ntest result: ok. 0 passed; 0 failed; 1 ignored");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = ApiServer::start();
    let (ran, failures) = runtime.block_on(async {
        let client = server.client().await;
        install_crds(&client).await;
        let metrics = Metrics::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let ctx = context(client.clone(), metrics.clone(), WatchScope::Cluster);
        let controller = tokio::spawn(sluice_operator::controller::run(ctx, async {
            let _ = stopped.await;
        }));

        let mut failures = Vec::new();
        type Scenario = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
        let scenarios: Vec<(&str, Scenario)> = vec![
            (
                "invalid manifests are rejected with the field named",
                Box::pin(invalid_manifests(client.clone())),
            ),
            (
                "create, no-op, update, ready, scale down, delete",
                Box::pin(lifecycle(client.clone(), metrics.clone())),
            ),
            (
                "fetch failures and crash loops become conditions and events",
                Box::pin(pod_failures(client.clone())),
            ),
            (
                "a profile that cannot be fetched becomes ProfileFetched=False and an event",
                Box::pin(profile_failures(client.clone())),
            ),
            (
                "spec.rollout.route: an owned HTTPRoute with per-revision weights",
                Box::pin(route_weights(client.clone())),
            ),
            (
                "the scale subresource drives the count in mode External",
                Box::pin(scale_subresource(client.clone())),
            ),
            (
                "GitOps: a dry run of the applied manifest changes nothing after reconciles and a rollback",
                Box::pin(gitops_no_drift(client.clone())),
            ),
            (
                "docs: every Sluice example (InferenceService, BatchInference, ServingPolicy) passes a server-side dry run",
                Box::pin(docs_examples(client.clone())),
            ),
            (
                "leader election has one holder at a time",
                Box::pin(leader_election(client.clone())),
            ),
            (
                "spec.security.allowedSources makes and removes a NetworkPolicy",
                Box::pin(network_policy(client.clone())),
            ),
            (
                "BatchInference: invalid manifests are rejected with the field named",
                Box::pin(batch::invalid_manifests(client.clone())),
            ),
            (
                "BatchInference: a one-time run's Job, its status from the Job and its pods, a rerun, a failed shard",
                Box::pin(batch::one_time_runs(client.clone())),
            ),
            (
                "BatchInference: a schedule's CronJob, suspend, its runs, a bad schedule, no schedule",
                Box::pin(batch::scheduled_runs(client.clone())),
            ),
            (
                "BatchInference: a missing InferenceService, then its model",
                Box::pin(batch::inference_service_reference(client.clone())),
            ),
            // Last: while its ServingPolicy "default" exists it guards every
            // unlabelled namespace.
            (
                "guardrails: the API server enforces a ServingPolicy through the admission policy",
                Box::pin(guardrails(client.clone())),
            ),
        ];
        let ran = scenarios.len();
        for (name, scenario) in scenarios {
            run_scenario(name, scenario, &mut failures).await;
        }
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), controller)
            .await
            .expect("the controller shuts down gracefully")
            .unwrap();
        // With the cluster-wide controller stopped, its namespace-scoped twin
        // runs on a ServiceAccount that holds Roles only.
        run_scenario(
            "namespace-scoped install: the chart's Roles are all the operator needs in its namespaces, and it leaves the others alone",
            scoped::namespace_scoped_install(client.clone(), &server),
            &mut failures,
        )
        .await;
        (ran + 1, failures)
    });
    drop(server);
    let failed = failures.len();
    if failed > 0 {
        eprintln!("{failed} scenario(s) failed: {failures:?}");
        println!(
            "\ntest result: FAILED. {} passed; {failed} failed",
            ran - failed
        );
        std::process::exit(1);
    }
    println!("\ntest result: ok. {ran} passed; 0 failed");
}

/// Runs one scenario and prints its outcome as the test harness would; a panic
/// (printed by the panic hook) records its name in `failures`.
async fn run_scenario(
    name: &'static str,
    scenario: impl Future<Output = ()>,
    failures: &mut Vec<&'static str>,
) {
    let started = Instant::now();
    match AssertUnwindSafe(scenario).catch_unwind().await {
        Ok(()) => println!(
            "test {name} ... ok ({:.1}s)",
            started.elapsed().as_secs_f64()
        ),
        Err(_) => {
            println!("test {name} ... FAILED (its panic is printed above)");
            failures.push(name);
        }
    }
}

/// What the operator's reconciles share, as `run` makes it, over `scope`.
fn context(client: Client, metrics: Metrics, scope: WatchScope) -> Arc<Context> {
    let reporter = Reporter {
        controller: "sluice-operator".into(),
        instance: Some("test".into()),
    };
    Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter.clone()),
        client,
        config: BuildConfig::default(),
        reporter,
        metrics,
        prometheus: None,
        scope,
    })
}

async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

fn dynamic(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<InferenceService>(&()),
    )
}

fn manifest(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "serving.sluice.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn condition(isvc: &InferenceService, type_: &str) -> Option<(String, String, String)> {
    let c = isvc
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until an Event with `reason` regards `name`.
async fn published(client: &Client, ns: &str, name: &str, reason: &str) {
    eventually(&format!("a {reason} event regards {name}"), || async {
        events(client, ns, name)
            .await
            .iter()
            .any(|e| e.1 == reason)
            .then_some(())
    })
    .await;
}

async fn events(client: &Client, ns: &str, name: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

async fn invalid_manifests(client: Client) {
    let ns = "invalid";
    namespace(&client, ns).await;
    let api = dynamic(&client, ns);
    let uri = "s3://models/fraud/3/model.onnx";
    let cases = [
        (
            json!({"model": {"storageUri": uri}, "minReplicas": 3, "maxReplicas": 2}),
            "spec.minReplicas must not be above spec.maxReplicas",
        ),
        (
            json!({"model": {"storageUri": "ftp://models/fraud.onnx"}}),
            "spec.model.storageUri",
        ),
        (
            json!({"model": {"storageUri": "pvc://claim-without-path"}}),
            "pvc://<claim-name>/<path>",
        ),
        (
            json!({"model": {"storageUri": uri, "sha256": "not-a-digest"}}),
            "spec.model.sha256",
        ),
        (
            json!({"model": {"storageUri": uri, "format": "pytorch"}}),
            "spec.model.format",
        ),
        (
            json!({"model": {"storageUri": uri}, "runtime": {"device": "tpu"}}),
            "spec.runtime.device",
        ),
        (
            json!({"model": {"storageUri": uri}, "minReplicas": 0}),
            "spec.minReplicas",
        ),
        (json!({"minReplicas": 2}), "spec.model"),
        (
            json!({"model": {"storageUri": uri}, "fallback": {"timeoutMs": 100}}),
            "spec.fallback takes exactly one of model and static",
        ),
        (
            json!({"model": {"storageUri": uri}, "fallback": {"static": [
                {"name": "label", "datatype": "STRING", "shape": [1], "data": [0]}]}}),
            "spec.fallback.static[0].datatype",
        ),
        (
            json!({"model": {"storageUri": uri}, "circuitBreaker": {"failureThreshold": 0}}),
            "spec.circuitBreaker.failureThreshold",
        ),
        (
            json!({"model": {"storageUri": uri}, "monitoring": {"windowRows": 100}}),
            "spec.monitoring.profileUri",
        ),
        (
            json!({"model": {"storageUri": uri}, "monitoring": {"profileUri": "gs://m/profile.json"}}),
            "spec.monitoring.profileUri must start with",
        ),
        (
            json!({"model": {"storageUri": uri}, "monitoring": {"profileUri": "pvc://claim-only"}}),
            "spec.monitoring.profileUri pvc:// must be pvc://<claim-name>/<path>",
        ),
        (
            json!({"model": {"storageUri": uri}, "monitoring": {"profileUri": uri, "profileSha256": "ABC"}}),
            "spec.monitoring.profileSha256 must be 64 lowercase hexadecimal digits",
        ),
        (
            json!({"model": {"storageUri": uri}, "monitoring": {"profileUri": uri, "minRows": 500, "windowRows": 200}}),
            "spec.monitoring.minRows must not be above spec.monitoring.windowRows",
        ),
        (
            json!({"model": {"storageUri": uri}, "monitoring": {"profileUri": uri, "intervalSeconds": 0}}),
            "spec.monitoring.intervalSeconds",
        ),
        (
            json!({"model": {"storageUri": uri}, "monitoring": {"profileUri": uri, "feedback": {"output": "label", "task": "ranking"}}}),
            "spec.monitoring.feedback.task",
        ),
        (
            json!({"model": {"storageUri": uri}, "streaming": {"brokers": "kafka:9092", "inputTopic": "a", "outputTopic": "a"}}),
            "spec.streaming.outputTopic must differ from inputTopic",
        ),
        (
            json!({"model": {"storageUri": uri}, "streaming": {"brokers": "kafka:9092", "inputTopic": "a", "outputTopic": "b", "deadLetterTopic": "b"}}),
            "spec.streaming.deadLetterTopic must differ from inputTopic and outputTopic",
        ),
        (
            json!({"model": {"storageUri": uri}, "streaming": {"brokers": "kafka", "inputTopic": "a", "outputTopic": "b"}}),
            "spec.streaming.brokers",
        ),
        (
            json!({"model": {"storageUri": uri}, "streaming": {"brokers": "kafka:9092", "inputTopic": "a", "outputTopic": "b"},
                "rollout": {"strategy": "BlueGreen"}}),
            "spec.streaming needs spec.rollout.strategy Canary",
        ),
        (
            json!({"model": {"storageUri": uri}, "streaming": {"brokers": "kafka:9092", "inputTopic": "a", "outputTopic": "b"},
                "security": {"tls": {"secretName": "tls"}}}),
            "spec.streaming takes no spec.security.tls",
        ),
        (
            json!({"model": {"storageUri": uri}, "streaming": {"brokers": "kafka:9092", "inputTopic": "a", "outputTopic": "b", "delivery": "AtMostOnce"}}),
            "spec.streaming.delivery",
        ),
    ];
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        let err = api
            .create(
                &PostParams::default(),
                &manifest(&format!("bad-{i}"), spec.clone()),
            )
            .await
            .expect_err(&format!("{spec} must be rejected"));
        let message = err.to_string();
        assert!(
            message.contains(expected),
            "rejection of {spec} says {message:?}, which does not name {expected:?}"
        );
    }
    // DESIGN.md's minimal manifest stays valid.
    let minimal = "apiVersion: serving.sluice.dev/v1alpha1\nkind: InferenceService\nmetadata: {name: fraud, namespace: invalid}\nspec:\n  model:\n    storageUri: s3://models/fraud/3/model.onnx\n";
    let object: DynamicObject = serde_saphyr::from_str(minimal).unwrap();
    let created = api
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &object,
        )
        .await
        .unwrap();
    assert_eq!(
        created.data["spec"]["minReplicas"], 2,
        "minReplicas defaults to the HA floor"
    );
}

async fn lifecycle(client: Client, metrics: Metrics) {
    let ns = "lifecycle";
    namespace(&client, ns).await;
    let isvcs: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let uri1 = "file:///models/iris/1/model.onnx";
    dynamic(&client, ns)
        .create(
            &PostParams::default(),
            &manifest("iris", json!({"model": {"storageUri": uri1}})),
        )
        .await
        .unwrap();

    // Create: every object appears, owned by the InferenceService, and status says why it is not ready.
    let isvc = eventually("status reports the revision", || async {
        let i = isvcs.get("iris").await.ok()?;
        i.status.as_ref()?.revision.as_ref()?;
        Some(i)
    })
    .await;
    let status = isvc.status.clone().unwrap();
    let revision1 = status.revision.clone().unwrap();
    let deployment1 = format!("iris-{revision1}");
    let deployment = eventually("the revision's Deployment exists", || async {
        deployments.get_opt(&deployment1).await.ok()?
    })
    .await;
    assert_eq!(status.observed_generation, isvc.metadata.generation);
    assert_eq!(
        status.url.as_deref(),
        Some("http://iris.lifecycle.svc.cluster.local:8080")
    );
    assert_eq!(condition(&isvc, "Reconciled").unwrap().0, "True");
    assert_eq!(condition(&isvc, "Ready").unwrap().0, "False");
    assert!(
        isvc.finalizers()
            .contains(&"serving.sluice.dev/cleanup".to_string())
    );
    let owner = &deployment.owner_references()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (isvc.uid().unwrap().as_str(), Some(true))
    );
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    assert!(services.get_opt("iris").await.unwrap().is_some());
    assert!(
        services.get_opt(&deployment1).await.unwrap().is_some(),
        "a Service per revision"
    );
    assert!(
        pdbs.get_opt("iris").await.unwrap().is_some(),
        "two replicas get a PodDisruptionBudget"
    );
    assert!(
        config_maps
            .get_opt(&format!("iris-{revision1}"))
            .await
            .unwrap()
            .is_some()
    );
    let managers: Vec<_> = deployment
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["sluice-operator"], "one field manager");
    published(&client, ns, "iris", "Created").await;

    // No-op: reconciles run (an annotation triggers one, and so does time) but write nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (writes, reconciles) = (metrics.total_writes(), metrics.reconciliations.get());
    let unchanged_version = deployment.resource_version();
    for i in 0..3 {
        isvcs
            .patch(
                "iris",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"poke": i.to_string()}}})),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert!(
        metrics.reconciliations.get() >= reconciles + 3,
        "the annotations triggered reconciles"
    );
    assert_eq!(
        metrics.total_writes(),
        writes,
        "a no-op reconcile writes nothing"
    );
    assert_eq!(
        deployments
            .get(&deployment1)
            .await
            .unwrap()
            .resource_version(),
        unchanged_version
    );

    // The first revision is stable once ready at full size (as the controller
    // manager would report it).
    mark_ready(&deployments, &deployment1, 2).await;
    eventually("the first revision is stable", || async {
        let s = isvcs.get("iris").await.ok()?.status?;
        (s.stable_revision.as_deref() == Some(revision1.as_str())).then_some(())
    })
    .await;

    // Update: a new model is a new revision; a canary starts beside the stable one.
    let uri2 = "file:///models/iris/2/model.onnx";
    isvcs
        .patch(
            "iris",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"model": {"storageUri": uri2}}})),
        )
        .await
        .unwrap();
    let revision2 = eventually("status moves to a new revision", || async {
        let r = isvcs.get("iris").await.ok()?.status?.revision?;
        (r != revision1).then_some(r)
    })
    .await;
    let deployment2 = format!("iris-{revision2}");
    let deployment = eventually("the canary's Deployment exists", || async {
        deployments.get_opt(&deployment2).await.ok()?
    })
    .await;
    assert_eq!(
        deployment.spec.as_ref().unwrap().replicas,
        Some(1),
        "the first canary step"
    );
    assert_eq!(
        deployments
            .get(&deployment1)
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(2),
        "the stable revision keeps its pods"
    );
    let template = deployment.spec.as_ref().unwrap().template.clone();
    assert_eq!(
        template.metadata.unwrap().labels.unwrap()[REVISION_LABEL],
        revision2
    );
    let args = template.spec.unwrap().init_containers.unwrap()[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args[1..3], ["--uri".to_string(), uri2.to_string()]);
    eventually("a RolloutStarted event is published", || async {
        events(&client, ns, "iris")
            .await
            .iter()
            .any(|e| e.1 == "RolloutStarted" && e.2.contains(&revision2))
            .then_some(())
    })
    .await;

    // Without Prometheus the canary holds at its first step; the promote annotation
    // moves it on. Once the new revision is ready at full size the InferenceService
    // turns Ready and the old revision's Deployment, Service and ConfigMap go.
    mark_ready(&deployments, &deployment2, 1).await;
    eventually("the canary holds, unanalysed", || async {
        let r = isvcs.get("iris").await.ok()?.status?.rollout?;
        (r.revision == revision2 && r.step_started.is_some()).then_some(())
    })
    .await;
    isvcs
        .patch(
            "iris",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"serving.sluice.dev/rollout": "promote"}}}),
            ),
        )
        .await
        .unwrap();
    eventually("promotion scales the canary to full size", || async {
        let d = deployments.get(&deployment2).await.ok()?;
        (d.spec?.replicas == Some(2)).then_some(())
    })
    .await;
    assert!(
        !isvcs
            .get("iris")
            .await
            .unwrap()
            .annotations()
            .contains_key("serving.sluice.dev/rollout"),
        "the command is removed once acted on"
    );
    mark_ready(&deployments, &deployment2, 2).await;
    // Ready pods are not enough: kube-proxy refuses a Service until its
    // EndpointSlices list a ready endpoint (this API server runs no
    // EndpointSlice controller, so the test writes the slice as it would).
    eventually("Ready waits for the Service's endpoints", || async {
        let i = isvcs.get("iris").await.ok()?;
        let status = i.status.as_ref()?;
        ((status.replicas, status.ready_replicas) == (2, 2)
            && condition(&i, "Ready")?.1 == "EndpointsNotReady")
            .then_some(())
    })
    .await;
    serve_endpoints(&client, ns, "iris", 2).await;
    // Until the old revision's Deployment is gone its pods count too (they
    // still serve while they terminate), so the status settles at 2 of 2. The
    // slice's watch event makes it Ready at once, well before the 30 s requeue.
    let listed = Instant::now();
    let isvc = eventually(
        "the InferenceService is Ready on the new revision's 2 pods",
        || async {
            let i = isvcs.get("iris").await.ok()?;
            let status = i.status.as_ref()?;
            (condition(&i, "Ready")?.0 == "True"
                && (status.replicas, status.ready_replicas) == (2, 2))
                .then_some(i)
        },
    )
    .await;
    assert!(
        listed.elapsed() < Duration::from_secs(20),
        "the EndpointSlice's watch event reconciled the InferenceService"
    );
    let status = isvc.status.unwrap();
    assert_eq!(status.stable_revision.as_deref(), Some(revision2.as_str()));
    let outcomes: Vec<_> = status
        .history
        .iter()
        .map(|h| (h.revision.clone(), format!("{:?}", h.outcome)))
        .collect();
    assert_eq!(
        outcomes,
        [
            (revision1.clone(), "Promoted".to_string()),
            (revision2.clone(), "Promoted".to_string())
        ]
    );
    assert_eq!(status.history[1].model.storage_uri, uri2);
    eventually(
        "the old revision's Deployment and Service are deleted",
        || async {
            (deployments.get_opt(&deployment1).await.ok()?.is_none()
                && services.get_opt(&deployment1).await.ok()?.is_none())
            .then_some(())
        },
    )
    .await;
    eventually("the old revision's ConfigMap is deleted", || async {
        config_maps
            .get_opt(&format!("iris-{revision1}"))
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;

    // One replica cannot afford a disruption budget.
    isvcs
        .patch(
            "iris",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"minReplicas": 1}})),
        )
        .await
        .unwrap();
    eventually("the PodDisruptionBudget is deleted", || async {
        pdbs.get_opt("iris").await.ok()?.is_none().then_some(())
    })
    .await;

    // Delete: the finalizer removes every object, then the InferenceService goes.
    isvcs
        .delete("iris", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the InferenceService is gone", || async {
        isvcs.get_opt("iris").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(deployments.get_opt(&deployment2).await.unwrap().is_none());
    assert!(services.get_opt("iris").await.unwrap().is_none());
    assert!(services.get_opt(&deployment2).await.unwrap().is_none());
    let left = config_maps
        .list(&ListParams::default().labels(&format!("{ISVC_LABEL}=iris")))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "ConfigMaps left behind");
}

/// The Gateway API's HTTPRoute CRD from its Go module (`e2e/gateway-api`), installed
/// and Established.
async fn install_httproute_crd(client: &Client) {
    let out =
        std::process::Command::new(support::repo_root().join("e2e/gateway-api/httproute-crd.sh"))
            .output()
            .expect("running e2e/gateway-api/httproute-crd.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8(out.stdout).unwrap();
    support::install_crd(client, std::path::Path::new(path.trim())).await;
}

async fn route_weights(client: Client) {
    let ns = "routed";
    namespace(&client, ns).await;
    install_httproute_crd(&client).await;
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
            "httproutes",
        ),
    );
    let isvcs: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let spec = |uri: &str| {
        json!({"model": {"storageUri": uri}, "rollout": {"route": {
            "parentRefs": [{"name": "gateway"}],
            "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
        }}})
    };
    dynamic(&client, ns)
        .create(
            &PostParams::default(),
            &manifest("routed", spec("file:///models/a.onnx")),
        )
        .await
        .unwrap();
    let backends = || async {
        let route = routes.get("routed").await.ok()?;
        let refs = route
            .data
            .pointer("/spec/rules/0/backendRefs")?
            .as_array()?
            .clone();
        let matches = route.data.pointer("/spec/rules/0/matches")?.clone();
        assert_eq!(
            matches[0]["path"]["value"], "/v2",
            "the rule's matches are the spec's"
        );
        Some(
            refs.iter()
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or("").to_string(),
                        r["weight"].as_i64().unwrap_or(-1),
                    )
                })
                .collect::<Vec<_>>(),
        )
    };
    let revision1 = eventually("the first revision is in status", || async {
        isvcs.get("routed").await.ok()?.status?.revision
    })
    .await;
    let name1 = format!("routed-{revision1}");
    eventually(
        "the route sends everything to the first revision",
        || async { (backends().await? == [(name1.clone(), 100)]).then_some(()) },
    )
    .await;
    eventually("the first revision's Deployment exists", || async {
        deployments.get_opt(&name1).await.ok()?
    })
    .await;
    mark_ready(&deployments, &name1, 2).await;
    eventually("the first revision is stable", || async {
        let s = isvcs.get("routed").await.ok()?.status?;
        (s.stable_revision? == revision1).then_some(())
    })
    .await;
    isvcs
        .patch(
            "routed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"model": {"storageUri": "file:///models/b.onnx"}}})),
        )
        .await
        .unwrap();
    let revision2 = eventually("the canary is in status", || async {
        let s = isvcs.get("routed").await.ok()?.status?;
        s.canary_revision
    })
    .await;
    let name2 = format!("routed-{revision2}");
    let canary = eventually("the canary's Deployment exists", || async {
        deployments.get_opt(&name2).await.ok()?
    })
    .await;
    assert_eq!(
        canary.spec.unwrap().replicas,
        Some(1),
        "25% of 2 pods, rounded up"
    );
    mark_ready(&deployments, &name2, 1).await;
    eventually("the route carries the first step's weights", || async {
        (backends().await? == [(name1.clone(), 75), (name2.clone(), 25)]).then_some(())
    })
    .await;
    let status = isvcs.get("routed").await.unwrap().status.unwrap();
    assert_eq!(status.canary_weight, Some(25), "exact with a route");
    let route = routes.get("routed").await.unwrap();
    let isvc = isvcs.get("routed").await.unwrap();
    assert_eq!(
        route.owner_references()[0].uid,
        isvc.uid().unwrap(),
        "the operator owns its route"
    );

    // Dropping spec.rollout.route deletes the route; one the InferenceService
    // does not own is never written.
    isvcs
        .patch(
            "routed",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "remove", "path": "/spec/rollout/route"}]))
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    eventually("the route is deleted with the spec's route", || async {
        routes.get_opt("routed").await.ok()?.is_none().then_some(())
    })
    .await;
    let foreign: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "routed", "namespace": ns},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": [{"name": "elsewhere", "port": 80}]}]},
    }))
    .unwrap();
    routes
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    isvcs
        .patch(
            "routed",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"rollout": {"route": {"parentRefs": [{"name": "gateway"}]}}}}),
            ),
        )
        .await
        .unwrap();
    published(&client, ns, "routed", "RouteConflict").await;
    let kept = routes.get("routed").await.unwrap();
    assert_eq!(
        kept.data["spec"]["rules"][0]["backendRefs"][0]["name"],
        "elsewhere"
    );
}

/// Reports `ready` pods of a Deployment's current generation, as the controller
/// manager would.
/// The Sluice objects among the YAML examples of `text` (a Markdown file's
/// ```yaml blocks, or a YAML file): whole objects as they are, and `spec:`
/// fragments as an InferenceService's spec (with a model when they have none).
fn sluice_examples(text: &str, markdown: bool) -> Vec<Value> {
    let blocks: Vec<&str> = if markdown {
        text.split("```yaml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .collect()
    } else {
        vec![text]
    };
    let mut examples = Vec::new();
    for block in blocks {
        let mut document = String::new();
        for line in block.lines().chain(["---"]) {
            if line.trim_end() != "---" {
                document.push_str(line);
                document.push('\n');
                continue;
            }
            let text = std::mem::take(&mut document);
            let Ok(mut value) = serde_saphyr::from_str::<Value>(&text) else {
                continue;
            };
            let api_version = value["apiVersion"].as_str().unwrap_or("");
            if api_version.starts_with("serving.sluice.dev/") {
                examples.push(value);
            } else if api_version.is_empty()
                && value.get("spec").is_some()
                && value.as_object().is_some_and(|o| o.len() == 1)
            {
                if value["spec"].get("model").is_none() {
                    value["spec"]["model"] =
                        json!({"storageUri": "s3://models/example/1/model.onnx"});
                }
                value["apiVersion"] = json!("serving.sluice.dev/v1alpha1");
                value["kind"] = json!("InferenceService");
                value["metadata"] = json!({"name": "fragment"});
                examples.push(value);
            }
        }
    }
    examples
}

/// Every Sluice example in the docs, the README and `config/samples` is accepted
/// by the API server with the committed CRDs (a server-side dry run), so the
/// docs cannot drift from the schema.
async fn docs_examples(client: Client) {
    let ns = "docs";
    namespace(&client, ns).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files: Vec<_> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .chain(std::fs::read_dir(root.join("config/samples")).unwrap())
        .map(|e| e.unwrap().path())
        .chain([root.join("README.md")])
        .filter(|p| p.extension().is_some_and(|e| e == "md" || e == "yaml"))
        .collect();
    files.sort();
    let (mut checked, mut failures) = (0, Vec::new());
    for file in &files {
        let markdown = file.extension().is_some_and(|e| e == "md");
        for mut example in sluice_examples(&std::fs::read_to_string(file).unwrap(), markdown) {
            let kind = example["kind"].as_str().unwrap_or("?").to_string();
            let api: Api<DynamicObject> = match kind.as_str() {
                "InferenceService" => Api::namespaced_with(
                    client.clone(),
                    ns,
                    &ApiResource::erase::<InferenceService>(&()),
                ),
                "BatchInference" => Api::namespaced_with(
                    client.clone(),
                    ns,
                    &ApiResource::erase::<sluice_operator::crd::BatchInference>(&()),
                ),
                // Cluster-scoped.
                "ServingPolicy" => {
                    Api::all_with(client.clone(), &ApiResource::erase::<ServingPolicy>(&()))
                }
                other => panic!("{}: unknown Sluice kind {other}", file.display()),
            };
            if kind != "ServingPolicy" {
                example["metadata"]["namespace"] = json!(ns);
            }
            let object: DynamicObject = serde_json::from_value(example.clone()).unwrap();
            let params = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            checked += 1;
            if let Err(e) = api.create(&params, &object).await {
                failures.push(format!(
                    "{} ({kind} {}): {e}",
                    file.display(),
                    object.name_any()
                ));
            }
        }
    }
    println!(
        "  {checked} examples from {} files passed a server-side dry run",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "examples the API server refuses:\n{}",
        failures.join("\n")
    );
    assert!(
        checked >= 20,
        "only {checked} examples found: the extraction broke"
    );
}

/// Creates each object of `config/policy/guardrails.yaml`: the admission policy
/// and its bindings.
async fn install_guardrails(client: &Client) {
    let path = format!(
        "{}/../config/policy/guardrails.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    for document in text.split("\n---\n") {
        let value: Value = serde_saphyr::from_str(document).unwrap();
        match value["kind"].as_str() {
            Some("ValidatingAdmissionPolicy") => {
                let policy = serde_json::from_value(value).unwrap();
                policies
                    .create(&PostParams::default(), &policy)
                    .await
                    .unwrap();
            }
            Some("ValidatingAdmissionPolicyBinding") => {
                let binding = serde_json::from_value(value).unwrap();
                bindings
                    .create(&PostParams::default(), &binding)
                    .await
                    .unwrap();
            }
            other => panic!("unexpected kind {other:?} in config/policy/guardrails.yaml"),
        }
    }
}

/// The guardrails of a ServingPolicy hold without the operator: the API server
/// refuses, with the policy's message, what the namespace's ServingPolicy
/// forbids, on create and on update; a namespace bound to a policy that does not
/// exist accepts nothing.
async fn guardrails(client: Client) {
    install_guardrails(&client).await;
    let ns = "guarded";
    namespace(&client, ns).await;
    let restricted: Namespace = serde_json::from_value(json!({"metadata": {
        "name": "restricted-team", "labels": {"serving.sluice.dev/policy": "restricted"}}}))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &restricted)
        .await
        .unwrap();
    let policies: Api<ServingPolicy> = Api::all(client.clone());
    let policy: ServingPolicy = serde_json::from_value(json!({
        "apiVersion": "serving.sluice.dev/v1alpha1",
        "kind": "ServingPolicy",
        "metadata": {"name": "default"},
        "spec": {"allowedStorageUriPrefixes": ["s3://approved/"], "maxReplicas": 4, "requireAuthentication": true,
                 "defaults": {"runtimeImage": "registry.internal/sluice-server:1.4"}},
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();

    let api = dynamic(&client, ns);
    let create = |name: &'static str, spec: Value| {
        let api = api.clone();
        async move {
            match api
                .create(&PostParams::default(), &manifest(name, spec))
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) => Err(e.message),
                Err(e) => panic!("{e}"),
            }
        }
    };
    let secured = json!({"apiKeysSecret": "team-keys"});
    let refusals = [
        (
            json!({"model": {"storageUri": "s3://elsewhere/m.onnx"}, "maxReplicas": 4, "security": secured}),
            "must start with one of s3://approved/ (ServingPolicy default)",
        ),
        (
            json!({"model": {"storageUri": "s3://approved/m.onnx"}, "maxReplicas": 4, "security": secured,
                   "fallback": {"model": {"storageUri": "https://elsewhere/m.onnx"}}}),
            "must start with one of s3://approved/",
        ),
        (
            json!({"model": {"storageUri": "s3://approved/m.onnx"}, "security": secured}),
            "spec.maxReplicas must be set and at most 4",
        ),
        (
            json!({"model": {"storageUri": "s3://approved/m.onnx"}, "maxReplicas": 8, "security": secured}),
            "spec.maxReplicas must be set and at most 4",
        ),
        (
            json!({"model": {"storageUri": "s3://approved/m.onnx"}, "maxReplicas": 4}),
            "spec.security.apiKeysSecret or spec.security.jwt must be set",
        ),
    ];
    // The policy is in force once the API server has loaded it and its parameter.
    // Until the API server has loaded the policy, its binding and its
    // parameter, a create may pass or fail for another reason.
    eventually(
        "the admission policy refuses a model from elsewhere",
        || async {
            let refused = create("probe", refusals[0].0.clone()).await.err()?;
            refused.contains(refusals[0].1).then_some(())
        },
    )
    .await;
    for (spec, message) in refusals {
        let refused = create("refused", spec.clone())
            .await
            .expect_err(&spec.to_string());
        assert!(refused.contains(message), "{spec}: {refused}");
        println!("  refused: {refused}");
    }
    create(
        "allowed",
        json!({"model": {"storageUri": "s3://approved/m.onnx"}, "minReplicas": 2, "maxReplicas": 4, "security": secured}),
    )
    .await
    .unwrap();
    let isvcs: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    // The operator fills in the policy's defaults (never into the spec) and
    // says so in status.
    let policy_status = eventually("status.policy lists the defaults", || async {
        isvcs.get("allowed").await.ok()?.status?.policy
    })
    .await;
    assert_eq!(
        (
            policy_status.name.as_str(),
            policy_status.defaulted.as_slice()
        ),
        ("default", ["runtime.image".to_string()].as_slice())
    );
    let revision = isvcs
        .get("allowed")
        .await
        .unwrap()
        .status
        .unwrap()
        .revision
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = eventually("the Deployment runs the policy's image", || async {
        deployments
            .get_opt(&format!("allowed-{revision}"))
            .await
            .ok()?
    })
    .await;
    let containers = deployment.spec.unwrap().template.spec.unwrap().containers;
    assert_eq!(
        containers[0].image.as_deref(),
        Some("registry.internal/sluice-server:1.4")
    );
    assert!(
        isvcs
            .get("allowed")
            .await
            .unwrap()
            .spec
            .runtime
            .image
            .is_none(),
        "the spec is untouched"
    );
    // A new default image reaches a new revision at once: the operator watches
    // ServingPolicies. Served and stable, the InferenceService is otherwise
    // next reconciled in 5 minutes, so only the watch passes the 20 s below.
    mark_ready(&deployments, &format!("allowed-{revision}"), 2).await;
    serve_endpoints(&client, ns, "allowed", 2).await;
    eventually("the InferenceService is Ready and stable", || async {
        let isvc = isvcs.get("allowed").await.ok()?;
        let stable = isvc.status.as_ref()?.stable_revision.as_deref() == Some(revision.as_str());
        (stable && condition(&isvc, "Ready")?.0 == "True").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let changed = Instant::now();
    policies
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"defaults": {"runtimeImage": "registry.internal/sluice-server:1.5"}}})),
        )
        .await
        .unwrap();
    let image = eventually("the new default image reaches a new revision", || async {
        let revision = isvcs.get("allowed").await.ok()?.status?.revision?;
        let deployment = deployments
            .get_opt(&format!("allowed-{revision}"))
            .await
            .ok()??;
        let containers = deployment.spec?.template.spec?.containers;
        containers[0]
            .image
            .clone()
            .filter(|image| image.ends_with(":1.5"))
    })
    .await;
    let elapsed = changed.elapsed();
    println!("  policy image change to {image}: new revision's Deployment after {elapsed:.1?}");
    assert!(
        elapsed < Duration::from_secs(20),
        "a policy change waited {elapsed:?}: is the ServingPolicy watch gone?"
    );
    let raised = isvcs
        .patch(
            "allowed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maxReplicas": 10}})),
        )
        .await
        .expect_err("an update past the ceiling is refused");
    assert!(raised.to_string().contains("at most 4"), "{raised}");

    // A namespace bound to a ServingPolicy that does not exist accepts nothing.
    let nothing = dynamic(&client, "restricted-team")
        .create(
            &PostParams::default(),
            &manifest(
                "any",
                json!({"model": {"storageUri": "s3://approved/m.onnx"}}),
            ),
        )
        .await
        .expect_err("no ServingPolicy restricted: refused");
    println!("  restricted-team without its ServingPolicy: {nothing}");

    // Without a ServingPolicy named default, unlabelled namespaces are free again.
    policies
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleting the policy lifts the guardrails", || async {
        create(
            "free",
            json!({"model": {"storageUri": "s3://elsewhere/m.onnx"}}),
        )
        .await
        .ok()
    })
    .await;
}

/// Argo CD's field manager for server-side apply (its `ArgoCDSSAManager`).
const ARGO_CD_MANAGER: &str = "argocd-controller";

/// A manifest of `operator/tests/fixtures/gitops`, as a Git repository holds it.
fn gitops_manifest(file: &str) -> DynamicObject {
    let path = format!(
        "{}/tests/fixtures/gitops/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// What an Argo CD sync does with `manifest`: a server-side apply under its
/// field manager, conflicts forced.
async fn argo_cd_sync(api: &Api<DynamicObject>, manifest: &DynamicObject, dry_run: bool) -> Value {
    let mut params = PatchParams::apply(ARGO_CD_MANAGER).force();
    params.dry_run = dry_run;
    let applied = api
        .patch(&manifest.name_any(), &params, &Patch::Apply(manifest))
        .await
        .unwrap();
    serde_json::to_value(applied).unwrap()
}

/// The fields (JSON paths) that a server-side dry run of `manifest` under Argo
/// CD's field manager would change in the live object: what its diff reports.
async fn gitops_drift(api: &Api<DynamicObject>, manifest: &DynamicObject) -> Vec<String> {
    let predicted = argo_cd_sync(api, manifest, true).await;
    let live = serde_json::to_value(api.get(&manifest.name_any()).await.unwrap()).unwrap();
    let mut changed = Vec::new();
    differing_paths(
        "",
        &without_managed_fields(live),
        &without_managed_fields(predicted),
        &mut changed,
    );
    changed
}

/// Prints how many fields [`gitops_drift`] finds for `manifest` (`what` says
/// which, and when) and asserts there are none.
async fn assert_no_drift(api: &Api<DynamicObject>, manifest: &DynamicObject, what: &str) {
    let changed = gitops_drift(api, manifest).await;
    println!(
        "  {what}: {} fields changed by a dry run of the same apply",
        changed.len()
    );
    assert!(
        changed.is_empty(),
        "{what}: a re-apply would change {changed:?}"
    );
}

fn without_managed_fields(mut object: Value) -> Value {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    object
}

/// Appends to `out` every leaf path where `a` and `b` differ.
fn differing_paths(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
            for key in keys {
                let (va, vb) = (
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                );
                differing_paths(&format!("{path}.{key}"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differing_paths(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// GitOps: the operator never writes what Argo CD applied. After it reconciled
/// each manifest (minimal, every section, a stream), a dry run of the same apply
/// changes no field; a `rollback` command is held in status, so the spec still
/// matches Git, and a revert in Git ends it.
async fn gitops_no_drift(client: Client) {
    let ns = "gitops";
    namespace(&client, ns).await;
    let api = dynamic(&client, ns);
    let isvcs: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for file in ["minimal.yaml", "full.yaml", "stream.yaml"] {
        let manifest = gitops_manifest(file);
        let name = manifest.name_any();
        argo_cd_sync(&api, &manifest, false).await;
        let isvc = eventually("the operator reconciled the manifest", || async {
            let i = isvcs.get(&name).await.ok()?;
            let status = i.status.as_ref()?;
            (status.observed_generation == i.metadata.generation
                && status.revision.is_some()
                && !i.finalizers().is_empty())
            .then_some(i)
        })
        .await;
        assert_eq!(
            condition(&isvc, "Reconciled").unwrap().0,
            "True",
            "{file}: {:?}",
            condition(&isvc, "Reconciled")
        );
        assert_no_drift(&api, &manifest, &format!("{file}, after the reconcile")).await;
    }

    // The dry run sees a real change (so the zeros above are counted).
    let mut edited = gitops_manifest("minimal.yaml");
    edited.data["spec"]["minReplicas"] = json!(3);
    assert_eq!(
        gitops_drift(&api, &edited).await,
        [".metadata.generation", ".spec.minReplicas"]
    );

    // A rollback under GitOps: revision 1 stable, Git moves to model 2, which
    // is promoted; the rollback command serves model 1 again without a write
    // to the spec.
    let mut manifest = gitops_manifest("minimal.yaml");
    let name = manifest.name_any();
    let revision1 = isvcs
        .get(&name)
        .await
        .unwrap()
        .status
        .unwrap()
        .revision
        .unwrap();
    mark_ready(&deployments, &format!("{name}-{revision1}"), 2).await;
    eventually("revision 1 is stable", || async {
        let s = isvcs.get(&name).await.ok()?.status?;
        (s.stable_revision.as_deref() == Some(revision1.as_str())).then_some(())
    })
    .await;
    let uri1 = manifest.data["spec"]["model"]["storageUri"].clone();
    manifest.data["spec"]["model"]["storageUri"] = json!("file:///models/iris/2/model.onnx");
    argo_cd_sync(&api, &manifest, false).await;
    let revision2 = eventually("Git's model 2 rolls out", || async {
        let r = isvcs.get(&name).await.ok()?.status?.revision?;
        (r != revision1).then_some(r)
    })
    .await;
    let command = |value: &'static str| {
        let isvcs = isvcs.clone();
        let name = name.clone();
        async move {
            isvcs
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"serving.sluice.dev/rollout": value}}}),
                    ),
                )
                .await
                .unwrap();
        }
    };
    eventually("the canary's Deployment exists", || async {
        deployments
            .get_opt(&format!("{name}-{revision2}"))
            .await
            .ok()?
    })
    .await;
    let deployment2 = format!("{name}-{revision2}");
    mark_ready(&deployments, &deployment2, 1).await;
    command("promote").await;
    eventually("promotion scales the canary to full size", || async {
        let d = deployments.get(&deployment2).await.ok()?;
        (d.spec?.replicas == Some(2)).then_some(())
    })
    .await;
    mark_ready(&deployments, &deployment2, 2).await;
    eventually("revision 2 is stable", || async {
        let s = isvcs.get(&name).await.ok()?.status?;
        (s.stable_revision.as_deref() == Some(revision2.as_str()) && s.rollout?.phase.finished())
            .then_some(())
    })
    .await;

    command("rollback").await;
    let isvc = eventually("the rollback is held in status and rolls out", || async {
        let i = isvcs.get(&name).await.ok()?;
        let status = i.status.as_ref()?;
        (status.rollback.as_ref()?.revision == revision1
            && status.revision.as_deref() == Some(revision1.as_str()))
        .then_some(i)
    })
    .await;
    assert_eq!(
        isvc.spec.model.storage_uri, "file:///models/iris/2/model.onnx",
        "the spec is Git's"
    );
    let rollback = isvc.status.as_ref().unwrap().rollback.clone().unwrap();
    assert_eq!(
        (
            rollback.spec_revision.as_str(),
            rollback.model.storage_uri.as_str()
        ),
        (revision2.as_str(), "file:///models/iris/1/model.onnx")
    );
    // Only Argo CD owns fields of the spec: the operator wrote status, the
    // finalizer and the command's removal.
    let spec_owners: Vec<_> = isvc
        .managed_fields()
        .iter()
        .filter(|m| m.subresource.is_none())
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:spec").is_some())
        })
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(spec_owners, [ARGO_CD_MANAGER], "owners of spec fields");
    assert_no_drift(&api, &manifest, "Git's manifest, after a rollback").await;

    // The revert in Git: model 1 is the spec's again, and the rollback is over.
    manifest.data["spec"]["model"]["storageUri"] = uri1;
    argo_cd_sync(&api, &manifest, false).await;
    eventually("a revert in Git ends the rollback", || async {
        let s = isvcs.get(&name).await.ok()?.status?;
        (s.rollback.is_none() && s.revision.as_deref() == Some(revision1.as_str())).then_some(())
    })
    .await;
}

/// Writes what the EndpointSlice controller would write for `service` with
/// `ready` ready pods of its InferenceService: the pods themselves (pending
/// forever: this API server has no kubelet), and a slice owned by the Service,
/// with its labels, listing them.
async fn serve_endpoints(client: &Client, ns: &str, service: &str, ready: usize) {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let owner = services.get(service).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut endpoints = Vec::new();
    for i in 0..ready {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-endpoint-{i}"), "labels": names::selector(service)},
            "spec": {"containers": [{"name": "server", "image": "sluice-server"}]},
        }))
        .unwrap();
        let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
        endpoints.push(json!({
            "addresses": [format!("10.0.0.{}", i + 1)],
            "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "namespace": ns, "name": pod.name_any(), "uid": pod.uid()},
        }));
    }
    let mut labels = owner.labels().clone();
    labels.insert("kubernetes.io/service-name".into(), service.into());
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {
            "name": format!("{service}-test"),
            "labels": labels,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": owner.uid(), "controller": true}],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();
}

async fn mark_ready(deployments: &Api<Deployment>, name: &str, ready: i32) {
    let generation = deployments.get(name).await.unwrap().metadata.generation;
    deployments
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": generation, "replicas": ready, "updatedReplicas": ready, "readyReplicas": ready, "availableReplicas": ready}})),
        )
        .await
        .unwrap();
}

async fn pod_failures(client: Client) {
    let ns = "failures";
    namespace(&client, ns).await;
    let isvcs: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    dynamic(&client, ns)
        .create(
            &PostParams::default(),
            &manifest("fraud", json!({"model": {"storageUri": "file:///models/fraud.onnx", "sha256": "0".repeat(64)}})),
        )
        .await
        .unwrap();
    let revision = eventually("status reports the revision", || async {
        isvcs.get("fraud").await.ok()?.status?.revision
    })
    .await;
    // A pod of that revision whose fetcher refused the file, as the kubelet reports it.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "fraud-1", "labels": {ISVC_LABEL: "fraud", REVISION_LABEL: revision}},
        "spec": {"containers": [{"name": "server", "image": "sluice-server"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let failed_fetch = json!({"status": {"initContainerStatuses": [{
        "name": "fetch-model", "image": "sluice-server", "imageID": "", "ready": false, "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
            "message": "fetching file:///models/fraud.onnx\nerror: sha256 mismatch: expected 0000, got 1234"}}
    }]}});
    pods.patch_status(
        "fraud-1",
        &PatchParams::default(),
        &Patch::Merge(failed_fetch),
    )
    .await
    .unwrap();
    let (_, reason, message) = eventually("ModelFetched turns False", || async {
        let c = condition(&isvcs.get("fraud").await.ok()?, "ModelFetched")?;
        (c.0 == "False").then_some(c)
    })
    .await;
    assert_eq!(reason, "DigestMismatch");
    assert!(message.contains("sha256 mismatch"), "{message}");
    let isvc = isvcs.get("fraud").await.unwrap();
    assert_eq!(condition(&isvc, "Ready").unwrap().1, "DigestMismatch");
    assert_eq!(
        isvc.status.unwrap().phase,
        Some(sluice_operator::crd::Phase::Failed)
    );
    eventually("a DigestMismatch warning is published", || async {
        events(&client, ns, "fraud")
            .await
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "DigestMismatch")
            .then_some(())
    })
    .await;

    // The fetch succeeds, then the server crash-loops.
    let crashing = json!({"status": {
        "initContainerStatuses": [{"name": "fetch-model", "image": "sluice-server", "imageID": "", "ready": true, "restartCount": 2,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
        "containerStatuses": [{"name": "server", "image": "sluice-server", "imageID": "", "ready": false, "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 101, "reason": "Error", "message": "model failed to load"}}}]
    }});
    pods.patch_status("fraud-1", &PatchParams::default(), &Patch::Merge(crashing))
        .await
        .unwrap();
    let (_, reason, message) = eventually("Available reports the crash loop", || async {
        let c = condition(&isvcs.get("fraud").await.ok()?, "Available")?;
        (c.1 == "CrashLooping").then_some(c)
    })
    .await;
    assert!(
        message.contains("fraud-1") && message.contains("model failed to load"),
        "{reason}: {message}"
    );
    assert_eq!(
        condition(&isvcs.get("fraud").await.unwrap(), "ModelFetched")
            .unwrap()
            .0,
        "True"
    );
    eventually("a CrashLooping warning is published", || async {
        events(&client, ns, "fraud")
            .await
            .iter()
            .any(|e| e.0 == "Warning" && e.1 == "CrashLooping")
            .then_some(())
    })
    .await;
}

/// A monitored InferenceService whose profile fetcher fails, first unreachable
/// and then with a wrong digest, as the kubelet reports it.
async fn profile_failures(client: Client) {
    let ns = "profiles";
    namespace(&client, ns).await;
    let isvcs: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    dynamic(&client, ns)
        .create(
            &PostParams::default(),
            &manifest(
                "fraud",
                json!({"model": {"storageUri": "file:///models/fraud.onnx"},
                       "monitoring": {"profileUri": "http://10.0.0.1/profile.json", "profileSha256": "0".repeat(64)}}),
            ),
        )
        .await
        .unwrap();
    let revision = eventually("status reports the revision", || async {
        isvcs.get("fraud").await.ok()?.status?.revision
    })
    .await;
    let isvc = isvcs.get("fraud").await.unwrap();
    assert_eq!(
        condition(&isvc, "ProfileFetched").map(|c| c.0),
        Some("Unknown".to_string()),
        "a monitored revision reports its profile's fetch"
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "fraud-1", "labels": {ISVC_LABEL: "fraud", REVISION_LABEL: revision}},
        "spec": {"containers": [{"name": "server", "image": "sluice-server"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    for (message, reason) in [
        (
            "fetching http://10.0.0.1/profile.json\nerror: download failed: connection refused",
            "ProfileFetchFailed",
        ),
        (
            "fetching http://10.0.0.1/profile.json\nerror: sha256 mismatch: expected 0000, got 1234",
            "ProfileDigestMismatch",
        ),
    ] {
        let status = json!({"status": {"initContainerStatuses": [
            {"name": "fetch-model", "image": "sluice-server", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "fetch-profile", "image": "sluice-server", "imageID": "", "ready": false, "restartCount": 2,
             "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}}},
        ]}});
        pods.patch_status("fraud-1", &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
        let (_, _, text) = eventually(
            &format!("ProfileFetched turns False with {reason}"),
            || async {
                let c = condition(&isvcs.get("fraud").await.ok()?, "ProfileFetched")?;
                (c.0 == "False" && c.1 == reason).then_some(c)
            },
        )
        .await;
        assert!(
            text.contains("fetching the reference profile failed"),
            "{text}"
        );
        let isvc = isvcs.get("fraud").await.unwrap();
        assert_eq!(condition(&isvc, "Ready").unwrap().1, reason);
        assert_eq!(condition(&isvc, "ModelFetched").unwrap().0, "True");
        assert_eq!(
            isvc.status.unwrap().phase,
            Some(sluice_operator::crd::Phase::Failed)
        );
        eventually(&format!("a {reason} warning is published"), || async {
            events(&client, ns, "fraud")
                .await
                .iter()
                .any(|e| e.0 == "Warning" && e.1 == reason)
                .then_some(())
        })
        .await;
    }
}

async fn leader_election(client: Client) {
    let ns = "leases";
    namespace(&client, ns).await;
    let a = LeaseLock::new(
        client.clone(),
        ns,
        "sluice-operator",
        "a",
        Duration::from_secs(15),
    );
    let b = LeaseLock::new(
        client.clone(),
        ns,
        "sluice-operator",
        "b",
        Duration::from_secs(15),
    );
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a free Lease is acquired"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "a held Lease is not"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    a.release().await.unwrap();
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "a released Lease is taken over"
    );
    assert!(!a.try_acquire_or_renew().await.unwrap());
}

async fn scale_subresource(client: Client) {
    let ns = "scaling";
    namespace(&client, ns).await;
    let isvcs: Api<InferenceService> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let spec = json!({"model": {"storageUri": "file:///models/iris/1/model.onnx"},
        "minReplicas": 2, "maxReplicas": 6, "autoscaling": {"mode": "External"}});
    dynamic(&client, ns)
        .create(&PostParams::default(), &manifest("scaled", spec))
        .await
        .unwrap();
    let replicas = |want: i32, signal: &'static str| {
        let (isvcs, deployments) = (isvcs.clone(), deployments.clone());
        async move {
            eventually(&format!("{want} replicas decided by {signal}"), || async {
                // One revision, so its Deployment runs the whole count.
                let selector =
                    ListParams::default().labels("serving.sluice.dev/inferenceservice=scaled");
                let running: i32 = deployments
                    .list(&selector)
                    .await
                    .ok()?
                    .items
                    .iter()
                    .filter_map(|d| d.spec.as_ref()?.replicas)
                    .sum();
                let a = isvcs.get("scaled").await.ok()?.status?.autoscaling?;
                let decided = serde_json::to_value(a.signal).ok()?;
                (running == want && a.desired_replicas == want && decided == signal)
                    .then_some(a.reason)
            })
            .await
        }
    };
    // spec.replicas unset: minReplicas.
    replicas(2, "MinReplicas").await;

    // `kubectl scale` writes spec.replicas through the scale subresource.
    isvcs
        .patch_scale(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(replicas(4, "External").await, "spec.replicas 4");
    let scale = isvcs.get_scale("scaled").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(4));
    assert_eq!(
        scale.status.unwrap().selector.as_deref(),
        Some("serving.sluice.dev/inferenceservice=scaled")
    );
    isvcs
        .patch_scale(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 10}})),
        )
        .await
        .unwrap();
    assert_eq!(
        replicas(6, "MaxReplicas").await,
        "spec.replicas 10 lowered to maxReplicas 6"
    );
    // Each change is a `Scaled` Event (the recorder folds repeats into a series on
    // the first one, so its note tells the first change).
    eventually("a Scaled event is published", || async {
        events(&client, ns, "scaled")
            .await
            .iter()
            .any(|(_, reason, note)| {
                reason == "Scaled" && note == "scaled from 2 to 4 replicas: spec.replicas 4"
            })
            .then_some(())
    })
    .await;

    // Back to mode Sluice: this operator has no Prometheus, so minReplicas.
    isvcs
        .patch(
            "scaled",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoscaling": {"mode": "Sluice"}}})),
        )
        .await
        .unwrap();
    let reason = replicas(2, "MinReplicas").await;
    assert!(reason.contains("--prometheus-url"), "{reason}");
    isvcs
        .delete("scaled", &DeleteParams::default())
        .await
        .unwrap();
}

async fn network_policy(client: Client) {
    let ns = "netpol";
    namespace(&client, ns).await;
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let api = dynamic(&client, ns);
    let uri = "file:///models/iris/1/model.onnx";

    let both = json!({"issuer": "i", "audience": "a", "jwksUri": "https://idp/jwks", "jwksConfigMap": "jwks"});
    let refused = api
        .create(
            &PostParams::default(),
            &manifest(
                "bad",
                json!({"model": {"storageUri": uri}, "security": {"jwt": both}}),
            ),
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("set exactly one of jwksUri and jwksConfigMap"),
        "{refused}"
    );

    let sources = json!([{"namespaceSelector": {"matchLabels": {"team": "payments"}}}]);
    api.create(
        &PostParams::default(),
        &manifest(
            "guarded",
            json!({"model": {"storageUri": uri}, "security": {"apiKeysSecret": "keys", "allowedSources": sources}}),
        ),
    )
    .await
    .unwrap();
    let policy = eventually("the NetworkPolicy exists", || async {
        policies.get_opt("guarded").await.ok()?
    })
    .await;
    let spec = policy.spec.unwrap();
    let rule = &spec.ingress.unwrap()[0];
    assert_eq!(
        serde_json::to_value(&rule.from).unwrap(),
        sources,
        "the policy admits exactly the configured sources"
    );
    assert_eq!(rule.ports.as_ref().unwrap().len(), 2);

    // Without allowedSources the policy goes.
    api.patch(
        "guarded",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"security": {"allowedSources": null}}})),
    )
    .await
    .unwrap();
    eventually("the NetworkPolicy is deleted", || async {
        policies
            .get_opt("guarded")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
