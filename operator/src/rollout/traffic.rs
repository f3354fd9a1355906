//! Traffic splitting between the stable and the new revision (pure).
//!
//! Without a route, the InferenceService's Service selects the pods of every
//! revision, so each ready pod gets an equal share: the new revision's share is
//! `new / (stable + new)` pods. The stable revision keeps all its pods during a
//! canary (capacity never drops), so a step of `w`% gets the fewest new pods whose
//! share is at least `w`%: the share moves in whole pods, and with two stable pods
//! the steps 25% and 50% become 33% and 50%. With an HTTPRoute the weights are exact
//! and the new revision gets `ceil(total * w / 100)` pods for its share.

use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::crd::rollout::RouteSpec;
use crate::names::{HTTP_PORT, revision_object_name};

/// Pods the new revision runs for a traffic share of `weight` percent, next to
/// `total` stable pods.
pub fn canary_replicas(total: i32, weight: i32, routed: bool) -> i32 {
    let total = total.max(1);
    let weight = weight.clamp(0, 100);
    if weight >= 100 {
        return total;
    }
    let pods = if routed {
        (total * weight + 99) / 100
    } else {
        // Smallest c with c / (total + c) >= weight / 100.
        (total * weight + (100 - weight) - 1) / (100 - weight)
    };
    pods.clamp(1, total)
}

/// Share of traffic, in percent (rounded), that `new` ready pods get next to
/// `stable` ready pods behind one Service.
pub fn replica_share(stable: i32, new: i32) -> i32 {
    let all = stable.max(0) + new.max(0);
    if all == 0 {
        return 0;
    }
    ((new.max(0) * 100 + all / 2) / all).clamp(0, 100)
}

/// The backendRefs every rule of the route gets: one per revision with a weight.
pub fn backend_refs(isvc: &str, weights: &[(String, i32)]) -> Value {
    Value::Array(
        weights
            .iter()
            .map(|(revision, weight)| {
                json!({
                    "group": "",
                    "kind": "Service",
                    "name": revision_object_name(isvc, revision),
                    "port": HTTP_PORT,
                    "weight": weight,
                })
            })
            .collect(),
    )
}

/// The Gateway API HTTPRoute kind.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// The `spec` of the HTTPRoute the operator owns for `route`: its parents and
/// hostnames, and one rule with the spec's matches whose backendRefs are the
/// per-revision Services with `weights`.
pub fn http_route_spec(isvc: &str, route: &RouteSpec, weights: &[(String, i32)]) -> Value {
    let mut rule = json!({"backendRefs": backend_refs(isvc, weights)});
    if !route.matches.is_empty() {
        rule["matches"] = json!(route.matches);
    }
    let mut spec = json!({"parentRefs": route.parent_refs, "rules": [rule]});
    if !route.hostnames.is_empty() {
        spec["hostnames"] = json!(route.hostnames);
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ratio_rounds_up_to_whole_pods() {
        // (total, weight) -> canary pods; the share never falls below the weight.
        for (total, weight, want) in [
            (2, 25, 1),
            (2, 50, 2),
            (2, 10, 1),
            (4, 25, 2),
            (10, 10, 2),
            (10, 50, 10),
            (3, 75, 3),
            (1, 1, 1),
            (5, 100, 5),
        ] {
            let got = canary_replicas(total, weight, false);
            assert_eq!(got, want, "total {total} weight {weight}");
            if weight < 100 && got < total {
                assert!(replica_share(total, got) >= weight, "{total} {weight}");
            }
        }
    }

    #[test]
    fn routed_canary_gets_pods_for_its_share() {
        assert_eq!(canary_replicas(2, 25, true), 1);
        assert_eq!(canary_replicas(10, 25, true), 3);
        assert_eq!(canary_replicas(10, 100, true), 10);
    }

    #[test]
    fn replica_share_is_rounded_percent() {
        assert_eq!(replica_share(2, 1), 33);
        assert_eq!(replica_share(2, 2), 50);
        assert_eq!(replica_share(0, 0), 0);
        assert_eq!(replica_share(0, 3), 100);
    }

    #[test]
    fn the_route_has_one_rule_with_the_spec_matches_and_weighted_revisions() {
        let weights = vec![("aaa".to_string(), 75), ("bbb".to_string(), 25)];
        let route: RouteSpec = serde_json::from_value(json!({
            "parentRefs": [{"name": "public", "namespace": "gateways"}],
            "hostnames": ["iris.example.com"],
            "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
        }))
        .unwrap();
        let spec = http_route_spec("iris", &route, &weights);
        assert_eq!(spec["parentRefs"][0]["namespace"], "gateways");
        assert_eq!(spec["hostnames"], json!(["iris.example.com"]));
        let rules = spec["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["matches"][0]["path"]["value"], "/v2");
        assert_eq!(rules[0]["backendRefs"][0]["name"], "iris-aaa");
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 25);

        // Without hostnames and matches, the Gateway API's defaults apply.
        let bare: RouteSpec =
            serde_json::from_value(json!({"parentRefs": [{"name": "public"}]})).unwrap();
        let spec = http_route_spec("iris", &bare, &weights);
        assert!(spec.get("hostnames").is_none() && spec["rules"][0].get("matches").is_none());
    }
}
