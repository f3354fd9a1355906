//! The operator's permissions, listed: the ClusterRole in `config/rbac` and the
//! Helm chart's must grant exactly this table, no wildcards, and nothing on
//! Secrets (the operator mounts the Secrets a spec names into pods by name; it
//! never reads them). The chart's namespace-scoped install grants the same in a
//! Role per watched namespace, less the cluster-scoped reads.

#[allow(dead_code)] // the chart rendering only
mod support;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use serde_json::Value;

const READ: &[&str] = &["get", "list", "watch"];
const OWN: &[&str] = &[
    "get", "list", "watch", "create", "patch", "update", "delete",
];

/// A permission: (API group, resource, verbs).
type Permission = (&'static str, &'static str, &'static [&'static str]);

/// Every permission the operator holds in a namespace it reconciles.
const IN_NAMESPACE: &[Permission] = &[
    (
        "serving.sluice.dev",
        "inferenceservices",
        &["get", "list", "watch", "patch", "update"],
    ),
    (
        "serving.sluice.dev",
        "inferenceservices/status",
        &["get", "patch", "update"],
    ),
    (
        "serving.sluice.dev",
        "inferenceservices/finalizers",
        &["update"],
    ),
    (
        "serving.sluice.dev",
        "batchinferences",
        &["get", "list", "watch"],
    ),
    // Status is written by server-side apply; no finalizer (what a
    // BatchInference makes is owned, and goes with it).
    ("serving.sluice.dev", "batchinferences/status", &["patch"]),
    ("apps", "deployments", OWN),
    // Serving pods with spec.placement.mode PerNode: one DaemonSet per revision.
    ("apps", "daemonsets", OWN),
    ("", "services", OWN),
    ("", "configmaps", OWN),
    ("policy", "poddisruptionbudgets", OWN),
    ("networking.k8s.io", "networkpolicies", OWN),
    ("", "pods", READ),
    // Ready waits until the Service's EndpointSlices list a ready endpoint.
    ("discovery.k8s.io", "endpointslices", READ),
    // Retraining Jobs (spec.monitoring.onDrift): created once, then only
    // watched. Batch runs: created once, suspended or resumed (patch), and
    // deleted once old (their figures stay in status.history).
    (
        "batch",
        "jobs",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    // A scheduled BatchInference's CronJob: applied server-side (patch, and
    // create when it does not exist yet), deleted when the schedule goes.
    (
        "batch",
        "cronjobs",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("events.k8s.io", "events", &["create", "patch"]),
    // spec.rollout.route: the operator's own HTTPRoute, applied server-side
    // with the rollout's weights, deleted when the spec drops it.
    (
        "gateway.networking.k8s.io",
        "httproutes",
        &["get", "create", "patch", "delete"],
    ),
];

/// What a cluster-wide install adds: a namespace's label names its
/// ServingPolicy, whose defaults apply (both objects are cluster-scoped); both
/// are watched, so that a change reaches the InferenceServices at once.
const CLUSTER_ONLY: &[Permission] = &[
    ("", "namespaces", READ),
    ("serving.sluice.dev", "servingpolicies", READ),
];

fn permissions(rules: &[PolicyRule]) -> Vec<(String, String, Vec<String>)> {
    let mut listed = Vec::new();
    for rule in rules {
        assert!(
            rule.non_resource_urls.is_none(),
            "non-resource URLs granted: {rule:?}"
        );
        assert!(
            rule.resource_names.is_none(),
            "unexpected resourceNames: {rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                listed.push((group.clone(), resource.clone(), rule.verbs.clone()));
            }
        }
    }
    listed.sort();
    listed
}

fn expected(cluster_wide: bool) -> Vec<(String, String, Vec<String>)> {
    let cluster_only = if cluster_wide { CLUSTER_ONLY } else { &[] };
    let mut expected: Vec<_> = IN_NAMESPACE
        .iter()
        .chain(cluster_only)
        .map(|(group, resource, verbs)| {
            (
                group.to_string(),
                resource.to_string(),
                verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect();
    expected.sort();
    expected
}

fn check(source: &str, rules: &[PolicyRule], cluster_wide: bool) {
    let listed = permissions(rules);
    println!("{source}:");
    for (group, resource, verbs) in &listed {
        let group = if group.is_empty() { "core" } else { group };
        println!("  {group:<20} {resource:<30} {}", verbs.join(","));
        assert!(
            !group.contains('*') && !resource.contains('*') && !verbs.iter().any(|v| v == "*"),
            "{source} grants a wildcard"
        );
        assert_ne!(resource, "secrets", "{source} grants access to Secrets");
    }
    assert_eq!(
        listed,
        expected(cluster_wide),
        "{source} differs from the permission table"
    );
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn config_rbac_grants_exactly_the_listed_permissions() {
    let text = std::fs::read_to_string(root().join("config/rbac/role.yaml")).unwrap();
    let role: ClusterRole = serde_saphyr::from_str(&text).unwrap();
    check("config/rbac/role.yaml", &role.rules.unwrap(), true);
}

#[test]
#[ignore = "needs helm, built with the upstream binaries: run by `make test-operator`"]
fn the_helm_chart_grants_the_same_permissions_cluster_wide() {
    let chart = support::helm_template("sluice-system", &[]);
    let roles = support::of_kind(&chart, "ClusterRole");
    let operator: Vec<&&Value> = roles
        .iter()
        .filter(|r| r["metadata"]["name"] == "sluice")
        .collect();
    let role: ClusterRole = serde_json::from_value((*operator[0]).clone()).unwrap();
    check("helm template (cluster-wide)", &role.rules.unwrap(), true);
    let bindings = support::of_kind(&chart, "ClusterRoleBinding");
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    assert_eq!(bindings[0]["subjects"][0]["namespace"], "sluice-system");
}

#[test]
#[ignore = "needs helm, built with the upstream binaries: run by `make test-operator`"]
fn the_helm_chart_grants_roles_only_in_the_watched_namespaces() {
    let chart = support::helm_template(
        "sluice-system",
        &[
            "watchNamespaces={team-a,team-b}",
            "rbac.aggregateToDefaultRoles=false",
        ],
    );
    let kinds: Vec<&str> = chart.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert!(
        !kinds.iter().any(|k| k.starts_with("Cluster")),
        "nothing cluster-wide: {kinds:?}"
    );
    let mut watched = Vec::new();
    for object in support::of_kind(&chart, "Role") {
        let role: Role = serde_json::from_value(object.clone()).unwrap();
        let namespace = role.metadata.namespace.clone().unwrap();
        if role.metadata.name.as_deref() == Some("sluice-leader-election") {
            assert_eq!(namespace, "sluice-system");
            continue;
        }
        check(
            &format!("helm template (Role in {namespace})"),
            &role.rules.unwrap(),
            false,
        );
        watched.push(namespace);
    }
    assert_eq!(watched, ["team-a", "team-b"]);
    let bound: Vec<&Value> = support::of_kind(&chart, "RoleBinding")
        .into_iter()
        .map(|b| &b["metadata"]["namespace"])
        .collect();
    assert_eq!(bound, ["team-a", "team-b", "sluice-system"]);
    let deployment = support::of_kind(&chart, "Deployment")[0];
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array().unwrap().contains(
            &serde_json::json!({"name": "SLUICE_WATCH_NAMESPACES", "value": "team-a,team-b"})
        ),
        "the operator watches the listed namespaces: {env}"
    );
}
