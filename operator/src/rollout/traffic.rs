//! Traffic splitting between the stable and the new revision (pure).
//!
//! Without a route, the InferenceService's Service selects the pods of every
//! revision, so each ready pod gets an equal share: the new revision's share is
//! `new / (stable + new)` pods. The stable revision keeps all its pods during a
//! canary (capacity never drops), so a step of `w`% gets the fewest new pods whose
//! share is at least `w`%: the share moves in whole pods, and with two stable pods
//! the steps 25% and 50% become 33% and 50%. With an HTTPRoute the weights are exact
//! and the new revision gets `ceil(total * w / 100)` pods for its share.

use serde_json::{Value, json};

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

/// The route's rules with every rule's backendRefs pointing at the per-revision
/// Services with `weights` (for a merge patch of `spec.rules`); `None` when every
/// rule already has them, or the route has no rules.
pub fn route_rules(route: &Value, isvc: &str, weights: &[(String, i32)]) -> Option<Value> {
    let refs = backend_refs(isvc, weights);
    let rules = route.pointer("/spec/rules")?.as_array()?;
    if rules
        .iter()
        .all(|rule| rule.get("backendRefs") == Some(&refs))
    {
        return None;
    }
    let rules = rules
        .iter()
        .map(|rule| {
            let mut rule = rule.clone();
            rule["backendRefs"] = refs.clone();
            rule
        })
        .collect();
    Some(Value::Array(rules))
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
    fn route_rules_point_every_rule_at_the_revisions_and_are_idempotent() {
        let weights = vec![("aaa".to_string(), 75), ("bbb".to_string(), 25)];
        let route = json!({"spec": {"rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": [{"name": "x", "port": 80}]},
            {"backendRefs": backend_refs("iris", &weights)},
        ]}});
        let rules = route_rules(&route, "iris", &weights).unwrap();
        assert_eq!(rules[0]["matches"], route["spec"]["rules"][0]["matches"]);
        assert_eq!(rules[0]["backendRefs"][0]["name"], "iris-aaa");
        assert_eq!(rules[0]["backendRefs"][1]["weight"], 25);
        assert_eq!(rules[1], route["spec"]["rules"][1]);
        let patched = json!({"spec": {"rules": rules}});
        assert_eq!(route_rules(&patched, "iris", &weights), None);
        assert_eq!(route_rules(&json!({"spec": {}}), "iris", &weights), None);
    }
}
