//! The operator's permissions, listed: the ClusterRole in `config/rbac` and the
//! Helm chart's must grant exactly this table, no wildcards, and nothing on
//! Secrets (the operator mounts the Secrets a spec names into pods by name; it
//! never reads them).

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};

const READ: &[&str] = &["get", "list", "watch"];
const OWN: &[&str] = &[
    "get", "list", "watch", "create", "patch", "update", "delete",
];

/// Every permission the operator holds cluster-wide: (API group, resource, verbs).
const EXPECTED: &[(&str, &str, &[&str])] = &[
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
    // A namespace's label names its ServingPolicy, whose defaults apply.
    ("", "namespaces", &["get"]),
    ("serving.sluice.dev", "servingpolicies", &["get"]),
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

fn expected() -> Vec<(String, String, Vec<String>)> {
    let mut expected: Vec<_> = EXPECTED
        .iter()
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

fn check(source: &str, role: &ClusterRole) {
    let listed = permissions(role.rules.as_deref().unwrap_or_default());
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
        expected(),
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
    check("config/rbac/role.yaml", &role);
}

#[test]
fn the_helm_chart_grants_the_same_permissions() {
    let text = std::fs::read_to_string(root().join("charts/sluice/templates/rbac.yaml")).unwrap();
    // The first document is the ClusterRole; drop the template lines around it.
    let first = text.split("\n---").next().unwrap();
    let plain: String = first
        .lines()
        .filter(|line| !line.contains("{{"))
        .map(|line| format!("{line}\n"))
        .collect();
    let role: ClusterRole = serde_saphyr::from_str(&plain).unwrap();
    check("charts/sluice/templates/rbac.yaml", &role);
}
