//! The namespace-scoped install of `tests/api_server.rs`: the Helm chart rendered
//! with `watchNamespaces` by the real `helm`, its ServiceAccount, Roles and
//! RoleBindings applied, and the operator run on that ServiceAccount's token, as
//! a pod presents it. Roles are all it holds, so any read or write outside its
//! namespaces (a ServingPolicy, a Namespace, a cluster-wide watch) is refused by
//! the API server and fails the scenario.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sluice_operator::config::WatchScope;
use sluice_operator::crd::{BatchInference, InferenceService};
use sluice_operator::leader::LeaseLock;
use sluice_operator::metrics::Metrics;
use tokio::sync::oneshot;

use super::batch::{batch_manifest, batches, jobs_of};
use super::support::{ApiServer, eventually, helm_template, of_kind};
use super::{context, dynamic, manifest, namespace};

/// Where the chart is installed, the namespace it watches, and one it does not.
const SYSTEM: &str = "scoped-system";
const TEAM: &str = "scoped-team";
const OTHER: &str = "scoped-other";

/// Creates each of `objects`, typed as `K`, in its own namespace.
async fn create_all<K>(client: &Client, objects: &[&Value])
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    for object in objects {
        let typed: K = serde_json::from_value((*object).clone()).unwrap();
        let namespace = typed.namespace().unwrap();
        Api::<K>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &typed)
            .await
            .unwrap();
    }
}

pub async fn namespace_scoped_install(admin: Client, server: &ApiServer) {
    for ns in [SYSTEM, TEAM, OTHER] {
        namespace(&admin, ns).await;
    }
    // What `helm install sluice charts/sluice -n scoped-system --set
    // watchNamespaces={scoped-team}` would create, less the operator's pod
    // (tests/rbac.rs checks what the chart renders in this mode).
    let chart = helm_template(
        SYSTEM,
        &[
            &format!("watchNamespaces={{{TEAM}}}"),
            "rbac.aggregateToDefaultRoles=false",
        ],
    );
    create_all::<ServiceAccount>(&admin, &of_kind(&chart, "ServiceAccount")).await;
    create_all::<Role>(&admin, &of_kind(&chart, "Role")).await;
    create_all::<RoleBinding>(&admin, &of_kind(&chart, "RoleBinding")).await;

    // The operator's credentials: its ServiceAccount's token.
    let account = of_kind(&chart, "ServiceAccount")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), SYSTEM)
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let client = server.client_with_token(&token).await;

    // Roles only: nothing cluster-wide, nothing in another namespace.
    for (what, refused) in [
        (
            "list InferenceServices in all namespaces",
            Api::<InferenceService>::all(client.clone())
                .list(&Default::default())
                .await
                .map(|_| ()),
        ),
        (
            "get a Namespace",
            Api::<Namespace>::all(client.clone())
                .get(TEAM)
                .await
                .map(|_| ()),
        ),
        (
            "list Deployments in scoped-other",
            Api::<Deployment>::namespaced(client.clone(), OTHER)
                .list(&Default::default())
                .await
                .map(|_| ()),
        ),
    ] {
        match refused {
            Err(kube::Error::Api(e)) if e.code == 403 => {}
            other => panic!("the operator's ServiceAccount may {what}: {other:?}"),
        }
    }
    let lease = LeaseLock::new(
        client.clone(),
        SYSTEM,
        "sluice-operator",
        "scoped",
        Duration::from_secs(15),
    );
    assert!(
        lease.try_acquire_or_renew().await.unwrap(),
        "the leader-election Role lets it hold its Lease"
    );

    let (stop, stopped) = oneshot::channel::<()>();
    let scope = WatchScope::Namespaces(vec![TEAM.to_string()]);
    let controller = tokio::spawn(sluice_operator::controller::run(
        context(client, Metrics::default(), scope),
        async {
            let _ = stopped.await;
        },
    ));

    let model = json!({"model": {"storageUri": "file:///models/iris/1/model.onnx"}});
    for ns in [OTHER, TEAM] {
        dynamic(&admin, ns)
            .create(&PostParams::default(), &manifest("iris", model.clone()))
            .await
            .unwrap();
    }
    batches(&admin, TEAM)
        .create(
            &PostParams::default(),
            &batch_manifest(
                "score",
                json!({
                    "model": {"storageUri": "file:///models/iris/1/model.onnx"},
                    "input": "file:///var/lib/sluice/batch/in/",
                    "output": "file:///var/lib/sluice/batch/out",
                    "format": "csv",
                }),
            ),
        )
        .await
        .unwrap();

    // In the watched namespace: served, with status, a finalizer and owned objects.
    let isvcs: Api<InferenceService> = Api::namespaced(admin.clone(), TEAM);
    let isvc = eventually(
        "the watched namespace's InferenceService is reconciled",
        || async {
            let isvc = isvcs.get("iris").await.ok()?;
            isvc.status.as_ref()?.revision.as_ref()?;
            Some(isvc)
        },
    )
    .await;
    let status = isvc.status.as_ref().unwrap();
    assert_eq!(
        status.policy, None,
        "a namespace-scoped operator applies no ServingPolicy"
    );
    assert!(
        isvc.finalizers()
            .contains(&"serving.sluice.dev/cleanup".into())
    );
    let revision = status.revision.clone().unwrap();
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), TEAM);
    eventually("its Deployment is created", || async {
        deployments
            .get_opt(&format!("iris-{revision}"))
            .await
            .ok()?
    })
    .await;
    assert!(
        Api::<Service>::namespaced(admin.clone(), TEAM)
            .get_opt("iris")
            .await
            .unwrap()
            .is_some()
    );
    let jobs: Api<Job> = Api::namespaced(admin.clone(), TEAM);
    eventually("the BatchInference's run is created", || async {
        jobs_of(&jobs, "score").await.into_iter().next()
    })
    .await;
    eventually("the BatchInference's status is written", || async {
        Api::<BatchInference>::namespaced(admin.clone(), TEAM)
            .get("score")
            .await
            .ok()?
            .status
    })
    .await;

    // Outside it: untouched, even after the watched one was served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other = Api::<InferenceService>::namespaced(admin.clone(), OTHER)
        .get("iris")
        .await
        .unwrap();
    assert!(
        other.status.is_none() && other.finalizers().is_empty(),
        "an unwatched namespace's InferenceService is left alone: {:?}",
        other.status
    );
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), OTHER)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // Deleting runs the finalizer's cleanup under the Role too.
    isvcs
        .delete("iris", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the InferenceService is deleted", || async {
        isvcs.get_opt("iris").await.ok()?.is_none().then_some(())
    })
    .await;

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .expect("the namespace-scoped controller shuts down gracefully")
        .unwrap();
}
