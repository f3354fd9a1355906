"""The alert rules and the Grafana dashboard in config/monitoring; no server needed.

promtool (from Debian's `prometheus` package, or `PROMTOOL=/path/to/promtool`) checks
the rules file and runs its unit tests, which make each threshold fire just above it
and stay quiet just below it. The PrometheusRule must carry exactly the same groups,
and both the rules and the dashboard may only name metrics sluice-server exports.
"""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from fixture_models import REPO

MONITORING = REPO / "config" / "monitoring"
RULES = MONITORING / "sluice-rules.yaml"
RULE_TESTS = MONITORING / "sluice-rules.test.yaml"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "sluice-dashboard.json"
KUSTOMIZATION = MONITORING / "kustomization.yaml"

# The metric names of DESIGN.md, plus the baselines that the quality alerts compare to.
DESIGN_METRICS = {
    "sluice_inference_requests_total",
    "sluice_inference_request_duration_seconds",
    "sluice_inference_queue_duration_seconds",
    "sluice_inference_compute_duration_seconds",
    "sluice_inference_batch_size",
    "sluice_inference_queue_depth",
    "sluice_model_ready",
    "sluice_model_load_seconds",
    "sluice_feature_drift_score",
    "sluice_feature_drift_pvalue",
    "sluice_prediction_drift_score",
    "sluice_missing_value_ratio",
    "sluice_model_accuracy",
    "sluice_model_mean_absolute_error",
}
BASELINE_METRICS = {"sluice_model_baseline_accuracy", "sluice_model_baseline_mean_absolute_error"}
HISTOGRAMS = {
    "sluice_inference_request_duration_seconds",
    "sluice_inference_queue_duration_seconds",
    "sluice_inference_compute_duration_seconds",
    "sluice_inference_batch_size",
}
KNOWN_SERIES = (
    DESIGN_METRICS
    | BASELINE_METRICS
    | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
)
METRIC = re.compile(r"\bsluice_[a-z0-9_]+")


def promtool():
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not path:
        pytest.fail("promtool not found: `apt-get install prometheus` or set PROMTOOL")
    return path


def rules():
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))


def all_rules():
    return [rule for group in rules()["groups"] for rule in group["rules"]]


def rule(name):
    (found,) = [r for r in all_rules() if r.get("alert") == name]
    return found


def squash(expr):
    return " ".join(expr.split())


def test_promtool_checks_the_rules():
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        check=False,
        capture_output=True,
        text=True,
        cwd=MONITORING,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_carries_the_same_groups():
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["metadata"]["name"]
    assert resource["spec"]["groups"] == rules()["groups"]


def test_kustomization_lists_existing_files():
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    files = list(kustomization.get("resources", []))
    for generator in kustomization.get("configMapGenerator", []):
        files += generator.get("files", [])
    assert "prometheusrule.yaml" in files and "sluice-dashboard.json" in files
    for name in files:
        assert (MONITORING / name).is_file(), name


def test_every_alert_has_severity_duration_and_annotations():
    for r in all_rules():
        name = r["alert"]
        assert r["labels"]["severity"] in {"warning", "critical"}, name
        assert re.fullmatch(r"\d+[smh]", r["for"]), name
        for key in ("summary", "description"):
            text = r["annotations"][key]
            assert "$labels.model" in text, f"{name} {key} does not name the model"
        text = r["annotations"]["summary"] + r["annotations"]["description"]
        assert "$labels.isvc" in text, f"{name} does not name the InferenceService"


@pytest.mark.parametrize(
    "alert,expected",
    [
        ("SluiceAccuracyDrop", "sluice_model_accuracy < 0.95 * sluice_model_baseline_accuracy"),
        ("SluiceFeatureDrift", "sluice_feature_drift_pvalue < 0.05"),
        ("SluicePredictionDrift", 'sluice_prediction_drift_score{test="psi"} > 0.1'),
        ("SluiceMissingValues", "sluice_missing_value_ratio > 0.01"),
        ("SluiceQueueDepthHigh", "(sluice_inference_queue_depth) > 200"),
    ],
)
def test_seed_thresholds(alert, expected):
    assert expected in squash(rule(alert)["expr"])


def test_latency_and_error_rate_thresholds():
    latency = squash(rule("SluiceHighLatencyP99")["expr"])
    assert latency.startswith("histogram_quantile(0.99,")
    assert "sluice_inference_request_duration_seconds_bucket" in latency
    assert latency.endswith("> 0.2")
    errors = squash(rule("SluiceHighErrorRate")["expr"])
    assert 'sluice_inference_requests_total{code=~"5.."}' in errors
    assert errors.endswith("> 0.05")


def test_rules_name_only_exported_metrics():
    for r in all_rules():
        for name in METRIC.findall(r["expr"]):
            assert name in KNOWN_SERIES, f"{r['alert']} uses unknown metric {name}"


def dashboard_exprs(dashboard):
    exprs = []

    def walk(panels):
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


def test_dashboard_references_every_design_metric():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = dashboard_exprs(dashboard)
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    unknown = used - KNOWN_SERIES
    assert not unknown, f"the dashboard names metrics the server does not export: {unknown}"
    bases = {re.sub(r"_(bucket|sum|count)$", "", n) if n not in DESIGN_METRICS else n for n in used}
    missing = DESIGN_METRICS - bases
    assert not missing, f"the dashboard does not show {sorted(missing)}"


def test_dashboard_is_templated_by_namespace_isvc_and_model():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "isvc", "model"} <= variables
    for expr in dashboard_exprs(dashboard):
        for variable in ("$namespace", "$isvc", "$model"):
            assert variable in expr, f"{expr} ignores {variable}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert dashboard["uid"] and dashboard["title"]


def test_helm_chart_carries_the_same_rules_and_dashboard():
    """The chart ships copies (Helm can only read files inside the chart)."""
    files = REPO / "charts" / "sluice" / "files"
    copies = [(files / "sluice-rules.yaml", RULES), (files / "sluice-dashboard.json", DASHBOARD)]
    if not any(copy.exists() for copy, _ in copies):
        pytest.skip("charts/sluice/files has no monitoring files yet")
    for copy, original in copies:
        assert copy.read_bytes() == original.read_bytes(), f"{copy} differs from {original}"
