//! The views of real-looking InferenceServices (YAML fixtures in the shape the
//! operator writes; `rollback_command.yaml` was captured from the local cluster):
//! the text `status` and `history` print, and their `-o json` documents.

use kubectl_sluice::cluster::RevisionReplicas;
use kubectl_sluice::history::HistoryView;
use kubectl_sluice::status::StatusView;
use kubectl_sluice::to_json;
use serde_json::{Value, json};
use sluice_operator::crd::InferenceService;

fn fixture(name: &str) -> InferenceService {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The two Deployments of the canary fixture, as `cluster::revision_replicas`
/// reads them.
fn canary_workloads() -> Vec<RevisionReplicas> {
    let workload = |revision: &str, ready, desired| RevisionReplicas {
        revision: revision.into(),
        ready,
        desired,
    };
    vec![workload("5c1e9a07d2", 2, 2), workload("4f9a2c71d0", 1, 1)]
}

#[test]
fn status_of_a_canary_shows_weights_pods_and_every_check() {
    let view = StatusView::new(&fixture("canary.yaml"), Some(&canary_workloads()));
    let expected = "\
Name:         iris
Namespace:    default
URL:          http://iris.default.svc.cluster.local:8080
Phase:        Progressing
Ready:        False (RollingOut): revision 4f9a2c71d0 is rolling out: step 0: analysis passed
Replicas:     3 of 3 ready, 2 wanted
Autoscaling:  2 wanted by signal MinReplicas (mode Sluice): floor minReplicas 2 (above CPU 4% of 0.1 cores (lowest over 300s) vs target 80 on 2 pods = 0.10)

REVISION    ROLE    WEIGHT  READY
5c1e9a07d2  stable  75%     2/2
4f9a2c71d0  canary  25%     1/1

Rollout:   Canary 4f9a2c71d0 replacing 5c1e9a07d2: Progressing
Step:      step 1 of 2 (25%)
Message:   step 0: analysis passed
Analysis:  last at 2026-11-30T10:02:49Z; 0 failed and 0 without data in a row

CHECK                  VALUE   THRESHOLD                                           VERDICT  DETAIL
error-rate             0.0000  <= 0.0200 (max of 2x and +0.02 over stable 0.0000)  Pass
p99-latency-vs-stable  0.0049  <= 0.0250 (max of 2x and +0.02 over stable 0.0050)  Pass
prediction-agreement   -       psi <= 0.2000 unless p >= 0.001                     NoData   the canary made 35 predictions in 120s, fewer than minRows 200
";
    assert_eq!(view.render(), expected);
}

#[test]
fn status_json_has_a_stable_shape_with_nulls_for_what_status_does_not_say() {
    let view = StatusView::new(&fixture("canary.yaml"), Some(&canary_workloads()));
    let text = to_json(&view).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected = [
        "name",
        "namespace",
        "generation",
        "observedGeneration",
        "url",
        "phase",
        "message",
        "ready",
        "replicas",
        "revisions",
        "rollout",
        "autoscaling",
        "rollback",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(doc["rollback"], Value::Null);
    assert_eq!(
        doc["revisions"],
        json!([
            {"revision": "5c1e9a07d2", "role": "stable", "weight": 75, "readyReplicas": 2, "replicas": 2},
            {"revision": "4f9a2c71d0", "role": "canary", "weight": 25, "readyReplicas": 1, "replicas": 1},
        ])
    );
    assert_eq!(
        doc["ready"],
        json!({"status": "False", "reason": "RollingOut",
               "message": "revision 4f9a2c71d0 is rolling out: step 0: analysis passed",
               "lastTransitionTime": "2026-11-30T10:02:11Z"})
    );
    let checks = doc["rollout"]["checks"].as_array().unwrap();
    let summary: Vec<(&str, Value, &str)> = checks
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["value"].clone(),
                c["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("error-rate", json!(0.0), "Pass"),
            ("p99-latency-vs-stable", json!(0.0049), "Pass"),
            ("prediction-agreement", Value::Null, "NoData"),
        ]
    );
    assert!(
        checks[0]["query"]
            .as_str()
            .unwrap()
            .contains("sluice_inference_requests_total")
    );
    assert_eq!(doc["rollout"]["stepDescription"], "step 1 of 2 (25%)");
    assert_eq!(doc["autoscaling"]["signal"], "MinReplicas");
    // The document reads back into the type that defines it.
    let back: StatusView = serde_json::from_str(&text).unwrap();
    assert_eq!(back, view);
}

#[test]
fn status_of_a_rollback_in_force_says_which_revision_serves_until_when() {
    // Without the workloads (no RBAC to list Deployments) the pods are `-`.
    let view = StatusView::new(&fixture("rollback_command.yaml"), None);
    let text = view.render();
    assert!(
        text.contains(
            "Rollback:     revision 0cff16cd04 (file:///opt/sluice/models/iris/1/model.onnx, version 1) \
             serves in place of the spec's revision b315e83a7f since 2026-12-01T05:02:53Z, until the spec changes"
        ),
        "{text}"
    );
    assert!(
        text.contains("REVISION    ROLE    WEIGHT  READY\n0cff16cd04  stable  100%    -\n"),
        "{text}"
    );
    assert!(text.contains("Step:      all 2 steps passed\n"), "{text}");
    let doc: Value = serde_json::from_str(&to_json(&view).unwrap()).unwrap();
    assert_eq!(
        doc["rollback"],
        json!({"revision": "0cff16cd04", "storageUri": "file:///opt/sluice/models/iris/1/model.onnx",
               "version": "1", "specRevision": "b315e83a7f", "time": "2026-12-01T05:02:53Z"})
    );
    assert_eq!(doc["revisions"][0]["readyReplicas"], Value::Null);
}

#[test]
fn a_rolled_back_rollout_leaves_the_spec_revision_without_traffic() {
    let view = StatusView::new(&fixture("rolled_back.yaml"), Some(&canary_workloads()));
    let text = view.render();
    assert!(
        text.contains("5c1e9a07d2  stable   100%    2/2\n4f9a2c71d0  current  0%      1/1\n"),
        "{text}"
    );
    assert!(
        text.contains("Step:      ended at step 1 of 2 (25%)\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "error-rate             0.2500  <= 0.0200 (max of 2x and +0.02 over stable 0.0000)  Fail"
        ),
        "{text}"
    );
}

#[test]
fn a_status_behind_the_spec_says_so() {
    let mut isvc = fixture("canary.yaml");
    isvc.metadata.generation = Some(3);
    let text = StatusView::new(&isvc, None).render();
    assert!(
        text.contains("Stale:        status describes generation 2; the spec is at 3"),
        "{text}"
    );
}

#[test]
fn a_new_inference_service_without_status_renders() {
    let mut isvc = fixture("canary.yaml");
    isvc.status = None;
    let view = StatusView::new(&isvc, Some(&[]));
    let text = view.render();
    assert!(
        text.contains("Phase:      -\nReady:      -\nReplicas:   0 of 0 ready\n"),
        "{text}"
    );
    assert!(
        text.contains("Revisions: none yet\n\nRollout: none yet\n"),
        "{text}"
    );
}

#[test]
fn history_lists_every_finished_rollout_and_marks_the_stable_one() {
    let view = HistoryView::new(&fixture("rolled_back.yaml"));
    let expected = "\
REVISION     OUTCOME     TIME                  MODEL                                        VERSION  REASON
5c1e9a07d2*  Promoted    2026-11-30T09:13:41Z  file:///opt/sluice/models/iris/1/model.onnx  1        first revision ready
4f9a2c71d0   RolledBack  2026-11-30T10:03:09Z  file:///opt/sluice/models/iris/2/model.onnx  2        analysis failed 2 times in a row: error-rate = 0.2500, want <= 0.0200 (max of 2x and +0.02 over stable 0.0000)
* stable: serves now
";
    assert_eq!(view.render(), expected);
    let doc: Value = serde_json::from_str(&to_json(&view).unwrap()).unwrap();
    assert_eq!(doc["stableRevision"], "5c1e9a07d2");
    assert_eq!(
        doc["entries"][1],
        json!({"revision": "4f9a2c71d0", "outcome": "RolledBack",
               "reason": "analysis failed 2 times in a row: error-rate = 0.2500, want <= 0.0200 (max of 2x and +0.02 over stable 0.0000)",
               "time": "2026-11-30T10:03:09Z",
               "storageUri": "file:///opt/sluice/models/iris/2/model.onnx", "version": "2",
               "sha256": "3b6a1f0e9d2c47a8b5e0c1d9f7a64e2b8c3d5f1a09e7b6c4d2a8f0e1c3b5d7a9"})
    );
}

#[test]
fn history_marks_only_the_newest_entry_of_the_stable_revision() {
    // 0cff16cd04 was promoted twice (first, then by the rollback command).
    let text = HistoryView::new(&fixture("rollback_command.yaml")).render();
    let marked: Vec<&str> = text.lines().filter(|l| l.contains('*')).collect();
    assert_eq!(marked.len(), 2, "{text}");
    assert!(
        marked[0].starts_with("0cff16cd04*  Promoted  2026-12-01T05:02:59Z"),
        "{text}"
    );
}
