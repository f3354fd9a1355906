"""Drift and model-quality monitoring on real data (issue 7), against SciPy.

One server per module serves a temporary repository built from the fixture models
(breast cancer, digits, diabetes regression), each profiled by `sluice-server profile`
from its training split. The tests check the profile, then that every statistic the
server exports agrees with SciPy/numpy on exactly the rows it was sent, then measure
the false-alarm rate on in-distribution traffic and how many requests each kind of
shift takes to be flagged, and finally ground-truth feedback.

Measured figures are printed (`pytest -s`) and written to /tmp/sluice-drift-figures.json.
"""

import json
import math
import time

import numpy as np
import onnxruntime as ort
import pytest
import requests
import scipy.stats

from drift_support import (
    Metrics,
    Traffic,
    add_model,
    chi2,
    close,
    ensure_monitored_models,
    ks,
    monitoring_yaml,
    output_columns,
    psi,
    read_csv,
    record,
    run_profile,
    settle,
)
from fixture_models import MODELS_DIR
from server_process import start_server

WINDOW = 200
MIN_ROWS = 50
INTERVAL_MS = 200
# Pixels of digits treated as categories (values 0-16) in the digits_cat copy.
CATEGORICAL_PIXELS = ["pixel_0_2", "pixel_2_2", "pixel_3_4", "pixel_5_5", "pixel_7_3"]
CLASSIFIER_OUTPUTS = ["label", "probabilities"]
# chi2 critical value at p = 0.05 with one degree of freedom (two classes).
CHI2_CRITICAL_DF1 = float(scipy.stats.chi2.ppf(0.95, 1))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The temporary model repository: {model name: profile or None}."""
    ensure_monitored_models()
    root = tmp_path_factory.mktemp("drift-repo")
    classification = ("label", "classification")
    models = {
        "cancer": add_model(root, "cancer", "cancer", monitoring_yaml(feedback=classification)),
        "digits": add_model(root, "digits", "digits", monitoring_yaml(feedback=classification)),
        "digits_cat": add_model(
            root, "digits_cat", "digits", monitoring_yaml(), categorical=CATEGORICAL_PIXELS
        ),
        "cancer_fa": add_model(root, "cancer_fa", "cancer", monitoring_yaml(window=100)),
        "cancer_minrows": add_model(root, "cancer_minrows", "cancer", monitoring_yaml()),
        "cancer_fb": add_model(
            root, "cancer_fb", "cancer", monitoring_yaml(feedback=classification)
        ),
        "regressor_fb": add_model(
            root,
            "regressor_fb",
            "regressor",
            monitoring_yaml(feedback=("variable", "regression"), retention=50),
        ),
        "cancer_nofb": add_model(root, "cancer_nofb", "cancer", monitoring_yaml()),
        "cancer_json": add_model(root, "cancer_json", "cancer", monitoring_yaml(window=100)),
        "mlp": add_model(root, "mlp", "mlp", None),
    }
    return root, models


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    root, models = repo
    running = start_server(tmp_path_factory.mktemp("drift-server") / "server.log", root)
    for name in models:
        response = running.request("GET", f"/v2/models/{name}/ready")
        if response.status != 200:
            meta = running.request("GET", f"/v2/models/{name}")
            pytest.fail(f"{name} is not ready: {meta.body!r}\n{running.log_tail()}")
    yield running
    code = running.terminate()
    assert code == 0, f"sluice-server exited with {code} on SIGTERM:\n{running.log_tail()}"


@pytest.fixture(scope="module")
def cancer_data():
    names, train_x, train_y = read_csv(MODELS_DIR / "cancer" / "train.csv")
    _, hold_x, hold_y = read_csv(MODELS_DIR / "cancer" / "holdout.csv")
    return names, train_x, train_y, hold_x, hold_y


def onnx_outputs(model, rows):
    session = ort.InferenceSession(str(MODELS_DIR / model / "1" / "model.onnx"))
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"float_input": rows}), strict=True))


def columns_by_name(profile, group):
    return {column["name"]: column for column in profile[group]}


# --- (a) the profile ------------------------------------------------------------------


def assert_numeric_column(column, values, where):
    values = np.sort(values[~np.isnan(values)].astype(np.float64))
    assert column["kind"] == "numeric", where
    sample = np.asarray(column["sample"], dtype=np.float64)
    assert np.all(np.diff(sample) >= 0), f"{where}: sample is not sorted"
    # Fewer rows than --sample-size: the sample is the whole column.
    assert len(sample) == len(values), f"{where}: sample has {len(sample)} of {len(values)}"
    np.testing.assert_allclose(sample, values, rtol=1e-6, atol=1e-7, err_msg=where)
    edges = np.asarray(column["bin_edges"], dtype=np.float64)
    assert len(edges) == 9, f"{where}: {len(edges)} bin edges"
    assert np.all(np.diff(edges) >= 0), f"{where}: bin edges are not sorted"
    # Any standard definition of the k-th decile lies between these order statistics.
    levels = np.arange(1, 10) / 10
    low = np.quantile(values, levels, method="lower")
    high = np.quantile(values, levels, method="higher")
    tolerance = 1e-6 * np.maximum(1.0, np.abs(edges))
    assert np.all(edges >= low - tolerance) and np.all(edges <= high + tolerance), (
        f"{where}: bin edges {edges} are not deciles (between {low} and {high})"
    )


def test_profile_of_cancer_matches_the_training_data(tmp_path, cancer_data):
    ensure_monitored_models()
    names, train_x, train_y, _, _ = cancer_data
    profile = run_profile(
        MODELS_DIR / "cancer" / "1" / "model.onnx",
        MODELS_DIR / "cancer" / "train.csv",
        tmp_path / "profile.json",
        label_column="target",
    )
    assert profile["format"] == 1
    assert profile["input"] == "float_input"
    assert profile["rows"] == len(train_x)
    features = profile["features"]
    assert [c["name"] for c in features] == names, "features must keep the CSV's order"
    for i, column in enumerate(features):
        assert column["missing_ratio"] == 0, column["name"]
        assert_numeric_column(column, train_x[:, i], column["name"])

    outputs = onnx_outputs("cancer", train_x)
    by_name = columns_by_name(profile, "outputs")
    assert set(by_name) == {"label", "probabilities[0]", "probabilities[1]"}
    label = by_name["label"]
    assert label["kind"] == "categorical"
    codes, counts = np.unique(outputs["label"], return_counts=True)
    want = {str(int(c)): n / len(train_x) for c, n in zip(codes, counts, strict=True)}
    assert set(label["proportions"]) == set(want)
    for code, share in want.items():
        assert math.isclose(label["proportions"][code], share, rel_tol=1e-9), code
    for i in range(2):
        column = by_name[f"probabilities[{i}]"]
        values = np.sort(outputs["probabilities"][:, i].astype(np.float64))
        assert column["kind"] == "numeric"
        np.testing.assert_allclose(column["sample"], values, rtol=1e-5, atol=1e-6)
        assert len(column["bin_edges"]) == 9
    accuracy = float(np.mean(outputs["label"] == train_y))
    assert profile["baseline"].keys() == {"accuracy"}
    assert math.isclose(profile["baseline"]["accuracy"], accuracy, rel_tol=1e-9)

    exact = all(
        np.array_equal(np.asarray(c["sample"]), np.sort(train_x[:, i]).astype(np.float64))
        for i, c in enumerate(features)
    )
    record(
        "profile",
        {
            "cancer_rows": profile["rows"],
            "cancer_baseline_accuracy": profile["baseline"]["accuracy"],
            "sample_values_are_float32": exact,
        },
    )


def test_profile_of_regressor_has_a_mean_absolute_error(tmp_path):
    ensure_monitored_models()
    _, train_x, train_y = read_csv(MODELS_DIR / "regressor" / "train.csv")
    profile = run_profile(
        MODELS_DIR / "regressor" / "1" / "model.onnx",
        MODELS_DIR / "regressor" / "train.csv",
        tmp_path / "profile.json",
        label_column="target",
    )
    predictions = onnx_outputs("regressor", train_x)["variable"].reshape(-1)
    mae = float(np.mean(np.abs(predictions.astype(np.float64) - train_y)))
    assert profile["baseline"].keys() == {"mean_absolute_error"}
    assert math.isclose(profile["baseline"]["mean_absolute_error"], mae, rel_tol=1e-5)
    (variable,) = profile["outputs"]
    assert variable["name"] == "variable" and variable["kind"] == "numeric"


def test_profile_of_npy_names_features_and_counts_missing(tmp_path, cancer_data):
    _, train_x, _, _, _ = cancer_data
    data = train_x.copy()
    rng = np.random.default_rng(11)
    holes = rng.choice(len(data), 40, replace=False)
    data[holes, 3] = np.nan
    np.save(tmp_path / "train.npy", data)
    profile = run_profile(
        MODELS_DIR / "cancer" / "1" / "model.onnx", tmp_path / "train.npy", tmp_path / "p.json"
    )
    assert [c["name"] for c in profile["features"]] == [f"f{i}" for i in range(30)]
    assert profile["baseline"] == {}
    column = profile["features"][3]
    assert math.isclose(column["missing_ratio"], 40 / len(data), rel_tol=1e-9)
    assert not np.any(np.isnan(column["sample"])), "NaN must not enter the sample"
    assert_numeric_column(column, data[:, 3], "f3")


def test_profile_categorical_columns_and_sample_size(tmp_path):
    ensure_monitored_models()
    names, train_x, _ = read_csv(MODELS_DIR / "digits" / "train.csv")
    profile = run_profile(
        MODELS_DIR / "digits" / "1" / "model.onnx",
        MODELS_DIR / "digits" / "train.csv",
        tmp_path / "p.json",
        label_column="target",
        categorical=CATEGORICAL_PIXELS,
        sample_size=100,
    )
    by_name = columns_by_name(profile, "features")
    for name in CATEGORICAL_PIXELS:
        column = by_name[name]
        assert column["kind"] == "categorical", name
        values = train_x[:, names.index(name)].astype(np.int64)
        codes, counts = np.unique(values, return_counts=True)
        want = {str(int(c)): n / len(values) for c, n in zip(codes, counts, strict=True)}
        assert set(column["proportions"]) == set(want), name
        for code, share in want.items():
            assert math.isclose(column["proportions"][code], share, rel_tol=1e-9), name
    numeric = by_name["pixel_3_3"]
    assert numeric["kind"] == "numeric"
    assert len(numeric["sample"]) == 100, "--sample-size 100 must bound the sample"
    column = train_x[:, names.index("pixel_3_3")]
    assert set(numeric["sample"]) <= set(column.astype(np.float64).tolist())


# --- (b) each statistic against SciPy ---------------------------------------------------


def test_no_drift_series_before_min_rows(server, cancer_data):
    """min_rows: nothing before 50 rows of traffic (warm-up rows are not traffic)."""
    _, _, _, hold_x, _ = cancer_data
    traffic = Traffic(server, "cancer_minrows", CLASSIFIER_OUTPUTS)
    try:
        settle(INTERVAL_MS)
        assert not Metrics(server, "cancer_minrows").find("sluice_feature_drift_score")
        traffic.send_rows(hold_x[:40], per_request=8)
        settle(INTERVAL_MS)
        series = Metrics(server, "cancer_minrows").find("sluice_feature_drift_score")
        assert not series, "drift series after 40 rows with min_rows 50 (is warm-up counted?)"
        traffic.send_rows(hold_x[40:60], per_request=4)
        settle(INTERVAL_MS)
        deadline = time.monotonic() + 5
        metrics = Metrics(server, "cancer_minrows")
        while len(metrics.find("sluice_feature_drift_score")) < 60 and time.monotonic() < deadline:
            time.sleep(INTERVAL_MS / 1000)
            metrics = Metrics(server, "cancer_minrows")
        assert len(metrics.find("sluice_feature_drift_score", test="ks")) == 30
        assert len(metrics.find("sluice_feature_drift_score", test="psi")) == 30
        assert len(metrics.find("sluice_feature_drift_pvalue", test="ks")) == 30
        assert len(metrics.find("sluice_missing_value_ratio")) == 30
        for labels, _ in metrics.find("sluice_feature_drift_score"):
            assert labels.get("version") == "1", labels
    finally:
        traffic.close()


def test_missing_values_sent_as_json_null_and_nan_count_in_the_missing_ratio(server, cancer_data):
    """Plain JSON through requests: NaN as json.dumps writes it, and None (null)."""
    names, _, _, hold_x, _ = cancer_data
    rows = hold_x[:100].astype(np.float64).tolist()
    for row in rows[:10]:
        row[0] = float("nan")  # json.dumps writes NaN
    for row in rows[10:30]:
        row[1] = None  # json.dumps writes null
    url = f"{server.base_url}/v2/models/cancer_json/infer"
    for start in range(0, len(rows), 10):
        chunk = rows[start : start + 10]
        shape = [len(chunk), len(names)]
        tensor = {"name": "float_input", "datatype": "FP32", "shape": shape, "data": chunk}
        body = json.dumps({"inputs": [tensor]})
        assert ("NaN" in body) == (start < 10)
        headers = {"Content-Type": "application/json"}
        response = requests.post(url, data=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        assert {o["name"] for o in response.json()["outputs"]} >= {"label"}
    want = {name: 0.0 for name in names}
    want[names[0]] = 0.1
    want[names[1]] = 0.2
    deadline = time.monotonic() + 5
    while True:
        got = Metrics(server, "cancer_json").table("sluice_missing_value_ratio", "feature")
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(INTERVAL_MS / 1000)
    assert got == want


def compare_until_agreed(server, model, profile, window, outputs, timeout=5.0):
    """compare_window, retried for a while in case the monitor thread lags (busy CI)."""
    deadline = time.monotonic() + timeout
    while True:
        problems, checked = compare_window(server, model, profile, window, outputs)
        if not problems or time.monotonic() > deadline:
            return problems, checked
        time.sleep(INTERVAL_MS / 1000)


def compare_window(server, model, profile, window, outputs):
    """Compare every exported statistic of model with the reference; returns mismatches."""
    metrics = Metrics(server, model)
    problems = []
    checked = 0

    def check(what, got, want, rel=1e-6, abs_=1e-9):
        nonlocal checked
        checked += 1
        if not close(got, want, rel=rel, abs_=abs_):
            problems.append(f"{what}: server {got}, reference {want}")

    for i, column in enumerate(profile["features"]):
        name = column["name"]
        values = window[:, i].astype(np.float64)
        missing = float(np.mean(np.isnan(values)))
        check(f"{name} missing", metrics.value("sluice_missing_value_ratio", feature=name), missing)
        if column["kind"] == "numeric":
            statistic, pvalue = ks(values, column["sample"])
            check(
                f"{name} ks",
                metrics.value("sluice_feature_drift_score", feature=name, test="ks"),
                statistic,
            )
            check(
                f"{name} ks p",
                metrics.value("sluice_feature_drift_pvalue", feature=name, test="ks"),
                pvalue,
                rel=1e-2,
                abs_=1e-6,
            )
            check(
                f"{name} psi",
                metrics.value("sluice_feature_drift_score", feature=name, test="psi"),
                psi(values, column["sample"], column["bin_edges"]),
            )
        else:
            statistic, pvalue = chi2(values, column["proportions"])
            check(
                f"{name} chi2",
                metrics.value("sluice_feature_drift_score", feature=name, test="chi2"),
                statistic,
            )
            check(
                f"{name} chi2 p",
                metrics.value("sluice_feature_drift_pvalue", feature=name, test="chi2"),
                pvalue,
                rel=1e-2,
                abs_=1e-6,
            )
    columns = output_columns(outputs)
    for column in profile["outputs"]:
        name = column["name"]
        values = np.asarray(columns[name], dtype=np.float64)
        if column["kind"] == "numeric":
            want = psi(values, column["sample"], column["bin_edges"])
            check(
                f"output {name} psi",
                metrics.value("sluice_prediction_drift_score", output=name, test="psi"),
                want,
            )
        else:
            want, _ = chi2(values, column["proportions"])
            check(
                f"output {name} chi2",
                metrics.value("sluice_prediction_drift_score", output=name, test="chi2"),
                want,
            )
    return problems, checked


def test_cancer_statistics_agree_with_scipy(server, repo, cancer_data):
    """A window of 200 rows: 5 features scaled by 1.1, one with 10 missing values."""
    _, profiles = repo
    _, _, _, hold_x, _ = cancer_data
    rng = np.random.default_rng(21)
    window = hold_x[rng.integers(0, len(hold_x), WINDOW)].copy()
    window[:, :5] *= np.float32(1.1)
    window[rng.choice(WINDOW, 10, replace=False), 5] = np.nan
    traffic = Traffic(server, "cancer", CLASSIFIER_OUTPUTS)
    try:
        outputs = traffic.send_rows(window, per_request=20)
    finally:
        traffic.close()
    settle(INTERVAL_MS)
    problems, checked = compare_until_agreed(server, "cancer", profiles["cancer"], window, outputs)
    assert checked == 30 * 4 + 3
    assert not problems, f"{len(problems)} of {checked} statistics disagree:\n" + "\n".join(
        problems
    )


def test_categorical_statistics_agree_with_scipy(server, repo):
    """digits with 5 categorical pixels: chi2 against scipy.stats.chisquare."""
    _, profiles = repo
    _, train_x, _ = read_csv(MODELS_DIR / "digits" / "train.csv")
    rng = np.random.default_rng(22)
    window = train_x[rng.integers(0, len(train_x), WINDOW)].copy()
    # Shift one categorical pixel so its chi2 is large, and miss a few values of another.
    profile = profiles["digits_cat"]
    names = [c["name"] for c in profile["features"]]
    window[:60, names.index("pixel_2_2")] = 0
    window[:7, names.index("pixel_3_4")] = np.nan
    traffic = Traffic(server, "digits_cat", CLASSIFIER_OUTPUTS)
    try:
        outputs = traffic.send_rows(window, per_request=25)
    finally:
        traffic.close()
    settle(INTERVAL_MS)
    problems, checked = compare_until_agreed(server, "digits_cat", profile, window, outputs)
    assert checked == 5 * 3 + 59 * 4 + 11
    assert not problems, f"{len(problems)} of {checked} statistics disagree:\n" + "\n".join(
        problems
    )


def test_unseen_categories_pool_into_other(server, repo):
    """A category the profile never saw goes to "other" (expected share 1e-4)."""
    _, profiles = repo
    _, train_x, _ = read_csv(MODELS_DIR / "digits" / "train.csv")
    profile = profiles["digits_cat"]
    names = [c["name"] for c in profile["features"]]
    index = names.index("pixel_0_2")
    column = profile["features"][index]
    unseen = max(int(c) for c in column["proportions"]) + 7
    rng = np.random.default_rng(23)
    window = train_x[rng.integers(0, len(train_x), WINDOW)].copy()
    window[:3, index] = unseen
    traffic = Traffic(server, "digits_cat", CLASSIFIER_OUTPUTS)
    try:
        traffic.send_rows(window, per_request=50)
    finally:
        traffic.close()
    settle(INTERVAL_MS)
    statistic, pvalue = chi2(window[:, index], column["proportions"])
    deadline = time.monotonic() + 5
    while True:
        metrics = Metrics(server, "digits_cat")
        got = metrics.value("sluice_feature_drift_score", feature="pixel_0_2", test="chi2")
        got_p = metrics.value("sluice_feature_drift_pvalue", feature="pixel_0_2", test="chi2")
        if close(got, statistic, rel=1e-6) or time.monotonic() > deadline:
            break
        time.sleep(INTERVAL_MS / 1000)
    assert close(got, statistic, rel=1e-6), f"chi2 {got}, reference {statistic}"
    assert close(got_p, pvalue, rel=1e-2, abs_=1e-6), f"p {got_p}, reference {pvalue}"


# --- (c) false alarms on in-distribution traffic -------------------------------------------


def alarm_rates(server, model, profile, pool, windows, window, replace, seed):
    """Send `windows` fresh windows of `window` rows drawn from pool; count alarms."""
    rng = np.random.default_rng(seed)
    features = [c["name"] for c in profile["features"] if c["kind"] == "numeric"]
    numeric_outputs = [c["name"] for c in profile["outputs"] if c["kind"] == "numeric"]
    classes = len(columns_by_name(profile, "outputs")["label"]["proportions"])
    label_critical = scipy.stats.chi2.ppf(0.95, classes - 1)
    count = dict.fromkeys(
        ["ks", "psi", "ks_any", "ks_bonferroni", "psi_any", "pred_psi", "pred_chi2"], 0
    )
    lowest = []
    traffic = Traffic(server, model, CLASSIFIER_OUTPUTS)
    try:
        for _ in range(windows):
            rows = pool[rng.choice(len(pool), window, replace=replace)]
            traffic.send_rows(rows, per_request=window)
            settle(INTERVAL_MS)
            metrics = Metrics(server, model)
            pvalues = metrics.table("sluice_feature_drift_pvalue", "feature", test="ks")
            scores = metrics.table("sluice_feature_drift_score", "feature", test="psi")
            assert set(pvalues) == set(features) and set(scores) == set(features)
            count["ks"] += sum(p < 0.05 for p in pvalues.values())
            count["psi"] += sum(s > 0.2 for s in scores.values())
            count["ks_any"] += any(p < 0.05 for p in pvalues.values())
            count["ks_bonferroni"] += any(p < 0.05 / len(features) for p in pvalues.values())
            count["psi_any"] += any(s > 0.2 for s in scores.values())
            lowest.append(min(pvalues.values()))
            predictions = metrics.table("sluice_prediction_drift_score", "output", test="psi")
            assert set(predictions) == set(numeric_outputs)
            count["pred_psi"] += any(s > 0.1 for s in predictions.values())
            label = metrics.value("sluice_prediction_drift_score", output="label", test="chi2")
            count["pred_chi2"] += label > label_critical
    finally:
        traffic.close()
    tested = windows * len(features)
    return {
        "windows": windows,
        "window_rows": window,
        "drawn": "with replacement" if replace else "without replacement",
        "features": len(features),
        "ks_p<0.05_per_feature_rate": count["ks"] / tested,
        "psi>0.2_per_feature_rate": count["psi"] / tested,
        "ks_p<0.05_any_feature_rate": count["ks_any"] / windows,
        "ks_p<0.05/F_any_feature_rate (Bonferroni)": count["ks_bonferroni"] / windows,
        "psi>0.2_any_feature_rate": count["psi_any"] / windows,
        "prediction_psi>0.1_any_output_rate (alert rule)": count["pred_psi"] / windows,
        "prediction_label_chi2_p<0.05_rate": count["pred_chi2"] / windows,
        "median_lowest_ks_p": float(np.median(lowest)),
    }


def test_false_alarm_rate_cancer_holdout(server, repo, cancer_data):
    """Windows of 100 of the 171 unseen holdout rows (cancer_fa's window is 100)."""
    _, profiles = repo
    _, _, _, hold_x, _ = cancer_data
    rates = alarm_rates(
        server, "cancer_fa", profiles["cancer_fa"], hold_x, 40, 100, replace=False, seed=31
    )
    record("false_alarms_cancer_holdout", rates)
    assert rates["ks_p<0.05_per_feature_rate"] < 0.10
    assert rates["ks_p<0.05/F_any_feature_rate (Bonferroni)"] < 0.25


def test_false_alarm_rate_cancer_train_bootstrap(server, repo, cancer_data):
    """Windows of 200 rows resampled from the training data (the reference itself)."""
    _, profiles = repo
    _, train_x, _, _, _ = cancer_data
    rates = alarm_rates(
        server, "cancer", profiles["cancer"], train_x, 40, WINDOW, replace=True, seed=32
    )
    record("false_alarms_cancer_train_bootstrap", rates)
    assert rates["ks_p<0.05_per_feature_rate"] < 0.10
    assert rates["psi>0.2_per_feature_rate"] < 0.10
    assert rates["ks_p<0.05/F_any_feature_rate (Bonferroni)"] < 0.25


def test_false_alarm_rate_digits_holdout(server, repo):
    """Windows of 200 of the 540 unseen digits holdout rows."""
    _, profiles = repo
    _, hold_x, _ = read_csv(MODELS_DIR / "digits" / "holdout.csv")
    rates = alarm_rates(
        server, "digits", profiles["digits"], hold_x, 30, WINDOW, replace=False, seed=33
    )
    record("false_alarms_digits_holdout", rates)
    assert rates["ks_p<0.05_per_feature_rate"] < 0.10
    assert rates["psi>0.2_per_feature_rate"] < 0.10
    assert rates["ks_p<0.05/F_any_feature_rate (Bonferroni)"] < 0.25


# --- (d) detection of shifts -------------------------------------------------------------

STEP = 5
MAX_SHIFTED = 300


def requests_to_flag(server, model, pool, shift, flags, seed):
    """Fill the window with in-distribution rows, then send shifted single-row requests.

    Every STEP requests the metrics are read; returns {flag name: shifted requests sent
    when it first held} (None when it never held within MAX_SHIFTED), plus whether each
    flag held on the clean window before the shift.
    """
    rng = np.random.default_rng(seed)
    traffic = Traffic(server, model, CLASSIFIER_OUTPUTS)
    found = {name: None for name in flags}
    try:
        traffic.send_rows(pool[rng.integers(0, len(pool), WINDOW)], per_request=WINDOW)
        settle(INTERVAL_MS)
        metrics = Metrics(server, model)
        before = {name: bool(test(metrics)) for name, test in flags.items()}
        sent = 0
        while sent < MAX_SHIFTED and any(v is None for v in found.values()):
            for _ in range(STEP):
                traffic.infer(shift(rng, pool))
            sent += STEP
            settle(INTERVAL_MS)
            metrics = Metrics(server, model)
            for name, test in flags.items():
                if found[name] is None and test(metrics):
                    found[name] = sent
    finally:
        traffic.close()
    return found, before


def ks_flag(features):
    def test(metrics):
        return any(
            metrics.value("sluice_feature_drift_pvalue", feature=f, test="ks") < 0.05
            for f in features
        )

    return test


def psi_flag(features, threshold=0.2):
    def test(metrics):
        return any(
            metrics.value("sluice_feature_drift_score", feature=f, test="psi") > threshold
            for f in features
        )

    return test


def missing_flag(feature):
    return lambda metrics: metrics.value("sluice_missing_value_ratio", feature=feature) > 0.01


def prediction_chi2_flag(metrics):
    return (
        metrics.value("sluice_prediction_drift_score", output="label", test="chi2")
        > CHI2_CRITICAL_DF1
    )


def prediction_psi_flag(metrics):
    return any(
        v > 0.1
        for v in metrics.table("sluice_prediction_drift_score", "output", test="psi").values()
    )


def test_detection_of_scaled_features(server, cancer_data):
    names, _, _, hold_x, _ = cancer_data
    scaled = [0, 2, 3]  # mean radius, mean perimeter, mean area

    def shift(rng, pool):
        row = pool[rng.integers(0, len(pool), 1)].copy()
        row[:, scaled] *= np.float32(1.5)
        return row

    features = [names[i] for i in scaled]
    found, before = requests_to_flag(
        server,
        "cancer",
        hold_x,
        shift,
        {
            "ks_p<0.05": ks_flag(features),
            "ks_p<0.05/30 (Bonferroni)": lambda m: any(
                m.value("sluice_feature_drift_pvalue", feature=f, test="ks") < 0.05 / 30
                for f in features
            ),
            "psi>0.2": psi_flag(features),
            "prediction_psi>0.1": prediction_psi_flag,
            "prediction_label_chi2_p<0.05": prediction_chi2_flag,
        },
        seed=41,
    )
    record(
        "detect_scaled_x1.5_on_3_features",
        {"requests_to_flag": found, "flagged_before_shift": before},
    )
    assert found["ks_p<0.05"] is not None and found["ks_p<0.05"] <= WINDOW // 2
    assert found["psi>0.2"] is not None and found["psi>0.2"] <= WINDOW


def test_detection_of_dropped_values(server, cancer_data):
    names, _, _, hold_x, _ = cancer_data
    feature = 1  # mean texture

    def shift(rng, pool):
        row = pool[rng.integers(0, len(pool), 1)].copy()
        if rng.random() < 0.05:
            row[0, feature] = np.nan
        return row

    found, before = requests_to_flag(
        server, "cancer", hold_x, shift, {"missing>1%": missing_flag(names[feature])}, seed=42
    )
    record(
        "detect_5%_missing_in_one_feature",
        {"requests_to_flag": found, "flagged_before_shift": before},
    )
    assert not before["missing>1%"]
    assert found["missing>1%"] is not None and found["missing>1%"] <= WINDOW


def test_detection_of_changed_class_mix(server, cancer_data):
    _, _, _, hold_x, hold_y = cancer_data
    malignant = hold_x[hold_y == 0]

    def shift(rng, pool):
        return malignant[rng.integers(0, len(malignant), 1)]

    found, before = requests_to_flag(
        server,
        "cancer",
        hold_x,
        shift,
        {
            "prediction_label_chi2_p<0.05": prediction_chi2_flag,
            "prediction_psi>0.1": prediction_psi_flag,
            "any_feature_ks_p<0.05/30": lambda m: any(
                p < 0.05 / 30
                for p in m.table("sluice_feature_drift_pvalue", "feature", test="ks").values()
            ),
        },
        seed=43,
    )
    record(
        "detect_only_malignant_rows", {"requests_to_flag": found, "flagged_before_shift": before}
    )
    assert found["prediction_label_chi2_p<0.05"] is not None
    assert found["prediction_label_chi2_p<0.05"] <= WINDOW
    assert found["prediction_psi>0.1"] is not None and found["prediction_psi>0.1"] <= WINDOW


# --- (e) ground truth ------------------------------------------------------------------------


def post_feedback(server, model, body, version=None):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/feedback"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = server.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    try:
        payload = json.loads(response.body or b"null")
    except json.JSONDecodeError:
        payload = response.body
    return response.status, payload


def assert_error(status, payload, want):
    assert status == want, f"status {status}, wanted {want}: {payload!r}"
    assert isinstance(payload, dict) and isinstance(payload.get("error"), str) and payload["error"]


def test_accuracy_from_feedback(server, repo, cancer_data):
    _, profiles = repo
    _, _, _, hold_x, hold_y = cancer_data
    traffic = Traffic(server, "cancer_fb", CLASSIFIER_OUTPUTS)
    correct = []
    before = Metrics(server, "cancer_fb")
    # The counters a rollout's accuracy check reads exist from load, at 0 or more.
    rows_before = before.value("sluice_feedback_rows_total")
    correct_before = before.value("sluice_feedback_correct_rows_total")
    assert rows_before is not None and correct_before is not None
    assert before.value("sluice_feedback_absolute_error_total") is None, "not for a classifier"
    try:
        for i, (row, truth) in enumerate(zip(hold_x, hold_y, strict=True)):
            label = int(traffic.infer(row[None], request_id=f"h{i}")["label"][0])
            status, payload = post_feedback(
                server, "cancer_fb", {"id": f"h{i}", "value": int(truth)}
            )
            assert status == 200, payload
            assert payload == {"id": f"h{i}", "rows": 1}
            correct.append(label == int(truth))
        settle(INTERVAL_MS)
        metrics = Metrics(server, "cancer_fb")
        accuracy = metrics.value("sluice_model_accuracy")
        baseline = metrics.value("sluice_model_baseline_accuracy")
        assert close(accuracy, float(np.mean(correct)), rel=1e-9)
        assert close(baseline, profiles["cancer_fb"]["baseline"]["accuracy"], rel=1e-9)
        assert abs(accuracy - baseline) < 0.05, (accuracy, baseline)
        holdout_accuracy = accuracy

        # Flipped labels: the last 200 feedback rows are 29 true and 171 flipped ones.
        for i, (row, truth) in enumerate(zip(hold_x, hold_y, strict=True)):
            label = int(traffic.infer(row[None], request_id=f"f{i}")["label"][0])
            status, payload = post_feedback(
                server, "cancer_fb", {"id": f"f{i}", "value": 1 - int(truth)}
            )
            assert status == 200, payload
            correct.append(label == 1 - int(truth))
        settle(INTERVAL_MS)
        metrics = Metrics(server, "cancer_fb")
        flipped = metrics.value("sluice_model_accuracy")
        assert close(flipped, float(np.mean(correct[-200:])), rel=1e-9)
        assert flipped < 0.95 * baseline, "the SluiceAccuracyDrop rule would not fire"
        counted = metrics.value("sluice_feedback_rows_total") - rows_before
        right = metrics.value("sluice_feedback_correct_rows_total") - correct_before
        assert (counted, right) == (len(correct), sum(correct)), (counted, right)
    finally:
        traffic.close()
    record(
        "feedback_accuracy_cancer",
        {
            "baseline_accuracy": baseline,
            "holdout_accuracy": holdout_accuracy,
            "flipped_accuracy": flipped,
        },
    )


def test_feedback_for_multi_row_requests_and_versions(server, cancer_data):
    _, _, _, hold_x, hold_y = cancer_data
    traffic = Traffic(server, "cancer_fb", CLASSIFIER_OUTPUTS)
    try:
        traffic.infer(hold_x[:5], request_id="multi-1")
        traffic.infer(hold_x[5:10], request_id="multi-2")
        traffic.infer(hold_x[10:11], request_id="multi-3")
    finally:
        traffic.close()
    labels = [int(v) for v in hold_y[:5]]
    assert_error(*post_feedback(server, "cancer_fb", {"id": "multi-1", "value": labels[:4]}), 400)
    assert_error(*post_feedback(server, "cancer_fb", {"id": "multi-1", "value": labels[0]}), 400)
    status, payload = post_feedback(server, "cancer_fb", {"id": "multi-1", "value": labels})
    assert status == 200 and payload == {"id": "multi-1", "rows": 5}, payload
    status, payload = post_feedback(
        server, "cancer_fb", {"id": "multi-2", "value": [int(v) for v in hold_y[5:10]]}, version=1
    )
    assert status == 200 and payload == {"id": "multi-2", "rows": 5}, payload
    status, payload = post_feedback(
        server, "cancer_fb", {"id": "multi-3", "value": [int(hold_y[10])]}
    )
    assert status == 200 and payload == {"id": "multi-3", "rows": 1}, (
        "a one-element list for a one-row request",
        payload,
    )


def test_feedback_errors(server, cancer_data):
    _, _, _, hold_x, _ = cancer_data
    traffic = Traffic(server, "cancer_fb", CLASSIFIER_OUTPUTS)
    try:
        traffic.infer(hold_x[:1], request_id="err-1")
        traffic.infer(hold_x[:1], request_id="err-2")
        traffic.infer(hold_x[:1])  # no id: not kept
    finally:
        traffic.close()
    assert_error(*post_feedback(server, "cancer_fb", {"id": "never-sent", "value": 1}), 404)
    assert_error(*post_feedback(server, "cancer_fb", b"{not json"), 400)
    assert_error(*post_feedback(server, "cancer_fb", {"value": 1}), 400)
    assert_error(*post_feedback(server, "cancer_fb", {"id": "err-1"}), 400)
    assert_error(*post_feedback(server, "cancer_fb", {"id": "err-1", "value": "benign"}), 400)
    assert_error(*post_feedback(server, "cancer_fb", {"id": "err-1", "value": [1, 0]}), 400)
    assert_error(*post_feedback(server, "cancer_fb", {"id": 17, "value": 1}), 400)
    status, payload = post_feedback(server, "cancer_fb", {"id": "err-2", "value": 1})
    assert status == 200, payload
    assert_error(*post_feedback(server, "cancer_fb", {"id": "err-2", "value": 0}), 409)
    assert_error(*post_feedback(server, "cancer_nofb", {"id": "x", "value": 1}), 400)
    assert_error(*post_feedback(server, "mlp", {"id": "x", "value": 1}), 400)
    assert_error(*post_feedback(server, "no_such_model", {"id": "x", "value": 1}), 404)


def test_mean_absolute_error_and_retention(server, repo):
    _, profiles = repo
    _, hold_x, hold_y = read_csv(MODELS_DIR / "regressor" / "holdout.csv")
    traffic = Traffic(server, "regressor_fb", ["variable"])
    errors = []
    before = Metrics(server, "regressor_fb")
    rows_before = before.value("sluice_feedback_rows_total")
    error_before = before.value("sluice_feedback_absolute_error_total")
    assert before.value("sluice_feedback_correct_rows_total") is None, "not for a regressor"
    try:
        for i, (row, truth) in enumerate(zip(hold_x, hold_y, strict=True)):
            prediction = float(
                traffic.infer(row[None], request_id=f"r{i}")["variable"].reshape(-1)[0]
            )
            status, payload = post_feedback(
                server, "regressor_fb", {"id": f"r{i}", "value": float(truth)}
            )
            assert status == 200, payload
            errors.append(abs(prediction - truth))
        settle(INTERVAL_MS)
        metrics = Metrics(server, "regressor_fb")
        mae = metrics.value("sluice_model_mean_absolute_error")
        baseline = metrics.value("sluice_model_baseline_mean_absolute_error")
        assert close(mae, float(np.mean(errors)), rel=1e-5)
        assert close(
            baseline, profiles["regressor_fb"]["baseline"]["mean_absolute_error"], rel=1e-9
        )
        assert mae < 1.3 * baseline, (mae, baseline)
        counted = metrics.value("sluice_feedback_rows_total") - rows_before
        summed = metrics.value("sluice_feedback_absolute_error_total") - error_before
        assert counted == len(errors), counted
        assert close(summed, float(np.sum(errors)), rel=1e-5), (summed, np.sum(errors))

        # retention: 50 requests; the oldest of 60 newer ones has expired.
        for i in range(60):
            traffic.infer(hold_x[i : i + 1], request_id=f"old{i}")
    finally:
        traffic.close()
    assert_error(*post_feedback(server, "regressor_fb", {"id": "old0", "value": 100.0}), 404)
    status, payload = post_feedback(server, "regressor_fb", {"id": "old59", "value": 100.0})
    assert status == 200, payload
    record("feedback_mae_regressor", {"baseline_mae": baseline, "holdout_mae": mae})


def absent_or_nan(value):
    return value is None or math.isnan(value)


def test_quality_series_only_where_they_mean_something(server, cancer_data):
    """No accuracy before any feedback (a 0 would fire SluiceAccuracyDrop against the
    baseline), no accuracy series for a regression model, no MAE for a classifier."""
    _, _, _, hold_x, _ = cancer_data
    traffic = Traffic(server, "cancer", CLASSIFIER_OUTPUTS)
    try:
        traffic.infer(hold_x[:1], request_id="quality-1")
    finally:
        traffic.close()
    settle(INTERVAL_MS)
    cancer = Metrics(server, "cancer")
    assert cancer.value("sluice_model_baseline_accuracy") > 0.9
    problems = []
    for name in (
        "sluice_model_accuracy",
        "sluice_model_mean_absolute_error",
        "sluice_model_baseline_mean_absolute_error",
    ):
        if not absent_or_nan(cancer.value(name)):
            problems.append(f"cancer (no feedback yet): {name} = {cancer.value(name)}")
    regressor = Metrics(server, "regressor_fb")
    for name in ("sluice_model_accuracy", "sluice_model_baseline_accuracy"):
        if not absent_or_nan(regressor.value(name)):
            problems.append(f"regressor_fb: {name} = {regressor.value(name)}")
    unmonitored = Metrics(server, "cancer_nofb")
    for name in ("sluice_model_accuracy", "sluice_model_mean_absolute_error"):
        if not absent_or_nan(unmonitored.value(name)):
            problems.append(
                f"cancer_nofb (no feedback section): {name} = {unmonitored.value(name)}"
            )
    assert not problems, "\n".join(problems)
