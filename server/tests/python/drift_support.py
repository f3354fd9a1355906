"""Helpers for the drift and model-quality tests: profiles, temp repositories,
traffic, /metrics, and the reference statistics the server must agree with.

The reference statistics follow the monitoring contract:

- KS: ``scipy.stats.ks_2samp(window, profile_sample, method="asymp")``;
- PSI: 10 bins from the profile's 9 inner decile edges (a value on an edge goes up,
  like ``numpy.searchsorted(edges, x, side="right")``), expected shares from the
  profile sample, both floored at 1e-4, ``sum((a - e) * ln(a / e))``;
- chi2: ``scipy.stats.chisquare(observed, expected)`` with expected = rows x profile
  proportions, over the profile's categories; values the profile never saw pool into
  one "other" category of expected proportion 1e-4 (the rest scaled by 1 - 1e-4);
- NaN values are left out of all three and counted by the missing ratio.
"""

import csv
import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import scipy.stats
import tritonclient.http as httpclient

from fixture_models import MODELS_DIR, ensure_models
from server_process import server_binary

FIGURES_PATH = Path("/tmp/sluice-drift-figures.json")
OTHER_PROPORTION = 1e-4
FLOOR = 1e-4


# --- fixtures on disk -------------------------------------------------------------------


def ensure_monitored_models():
    """Generate the fixture repository when the monitored models are missing."""
    ensure_models()
    needed = [MODELS_DIR / m / "train.csv" for m in ("cancer", "digits", "regressor")]
    if not all(p.exists() for p in needed):
        import sys

        from fixture_models import GENERATOR

        subprocess.run(
            [sys.executable, str(GENERATOR), "--out", str(MODELS_DIR)],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def read_csv(path):
    """(feature names, float32 features [n, F], target as float64 [n])."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    assert header[-1] == "target", header
    data = np.array(body, dtype=np.float64)
    return header[:-1], data[:, :-1].astype(np.float32), data[:, -1]


def run_profile(model, data, output, label_column=None, categorical=(), sample_size=None):
    """Run `sluice-server profile` and return its parsed output."""
    command = [
        str(server_binary()),
        "profile",
        "--model",
        str(model),
        "--data",
        str(data),
        "--output",
        str(output),
    ]
    if label_column:
        command += ["--label-column", label_column]
    if categorical:
        command += ["--categorical", ",".join(categorical)]
    if sample_size is not None:
        command += ["--sample-size", str(sample_size)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"{' '.join(command)} exited with {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    return json.loads(Path(output).read_text(encoding="utf-8"))


def monitoring_yaml(
    window=200,
    min_rows=50,
    interval_ms=200,
    feedback=None,
    feedback_window=200,
    retention=None,
    profile="profile.json",
):
    """A config.yaml with a monitoring section (feedback = (output, task) or None)."""
    text = (
        "max_batch_size: 32\n"
        "monitoring:\n"
        f"  profile: {profile}\n"
        f"  window: {window}\n"
        f"  min_rows: {min_rows}\n"
        f"  interval_ms: {interval_ms}\n"
    )
    if feedback:
        output, task = feedback
        text += f"  feedback:\n    output: {output}\n    task: {task}\n"
        text += f"    window: {feedback_window}\n"
        if retention is not None:
            text += f"    retention: {retention}\n"
    return text


def add_model(repository, name, source, config=None, categorical=(), label_column="target"):
    """Copy fixture model `source` to repository/name, profile it, write config.yaml.

    Returns the profile (None when config is None: a model without monitoring).
    """
    target = repository / name
    (target / "1").mkdir(parents=True)
    shutil.copy(MODELS_DIR / source / "1" / "model.onnx", target / "1" / "model.onnx")
    if config is None:
        return None
    profile = run_profile(
        target / "1" / "model.onnx",
        MODELS_DIR / source / "train.csv",
        target / "profile.json",
        label_column=label_column,
        categorical=categorical,
    )
    (target / "config.yaml").write_text(config, encoding="utf-8")
    return profile


# --- traffic ----------------------------------------------------------------------------


class Traffic:
    """Sends rows to one model over HTTP with binary tensors (so NaN travels)."""

    def __init__(self, server, model, outputs):
        self.client = httpclient.InferenceServerClient(server.http_url, network_timeout=60.0)
        self.model = model
        self.outputs = outputs

    def close(self):
        self.client.close()

    def infer(self, rows, request_id=""):
        """One request holding rows [n, F]; returns {output: array}."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        tensor = httpclient.InferInput("float_input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=True)
        requested = [httpclient.InferRequestedOutput(o, binary_data=True) for o in self.outputs]
        result = self.client.infer(self.model, [tensor], outputs=requested, request_id=request_id)
        return {o: result.as_numpy(o) for o in self.outputs}

    def send_rows(self, rows, per_request=1):
        """Send rows in requests of per_request rows; returns the outputs stacked."""
        pieces = [self.infer(rows[i : i + per_request]) for i in range(0, len(rows), per_request)]
        return {o: np.concatenate([p[o] for p in pieces]) for o in self.outputs}


def settle(interval_ms):
    """Wait until the statistics were recomputed at least once after the last request."""
    time.sleep(2.5 * interval_ms / 1000 + 0.1)


# --- /metrics ---------------------------------------------------------------------------


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} for every sample line."""
    import re

    sample = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = sample.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        name, labels, value = match.groups()
        labels = {
            k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in label.findall(labels or "")
        }
        samples.append((name, labels, float(value)))
    return samples


class Metrics:
    """One scrape of /metrics, filtered to one model."""

    def __init__(self, server, model):
        response = server.request("GET", "/metrics")
        assert response.status == 200
        self.samples = [
            (name, labels, value)
            for name, labels, value in parse_metrics(response.body.decode("utf-8"))
            if labels.get("model") == model
        ]

    def find(self, name, **labels):
        return [
            (l, v)
            for n, l, v in self.samples
            if n == name and all(l.get(k) == want for k, want in labels.items())
        ]

    def value(self, name, **labels):
        """The one value of a series; None when absent."""
        found = self.find(name, **labels)
        assert len(found) <= 1, f"{name}{labels}: several series {found}"
        return found[0][1] if found else None

    def table(self, name, key, **labels):
        """{label value of key: sample value} for a metric family."""
        return {l[key]: v for l, v in self.find(name, **labels)}


# --- reference statistics ---------------------------------------------------------------


def present(values):
    values = np.asarray(values, dtype=np.float64)
    return values[~np.isnan(values)]


def ks(window, sample):
    """(statistic, asymptotic p-value) as scipy computes them."""
    result = scipy.stats.ks_2samp(present(window), np.asarray(sample, np.float64), method="asymp")
    return float(result.statistic), float(result.pvalue)


def bin_shares(values, edges):
    bins = np.searchsorted(np.asarray(edges, np.float64), values, side="right")
    return np.bincount(bins, minlength=len(edges) + 1) / len(values)


def psi(window, sample, edges):
    actual = np.maximum(bin_shares(present(window), edges), FLOOR)
    expected = np.maximum(bin_shares(np.asarray(sample, np.float64), edges), FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def chi2(window, proportions, always_other=False):
    """(statistic, p-value) of the window's category counts against the profile's.

    The "other" category (values the profile never saw) is included when the window
    has such values, or always when always_other is true.
    """
    codes = present(window).astype(np.int64)
    known = sorted(int(c) for c in proportions)
    observed = [int(np.sum(codes == c)) for c in known]
    shares = [proportions[str(c)] for c in known]
    unseen = len(codes) - sum(observed)
    if unseen or always_other:
        observed.append(unseen)
        shares = [p * (1 - OTHER_PROPORTION) for p in shares] + [OTHER_PROPORTION]
    total = sum(shares)
    expected = [len(codes) * p / total for p in shares]
    result = scipy.stats.chisquare(observed, expected)
    return float(result.statistic), float(result.pvalue)


def output_columns(outputs):
    """{column name: values} as the profile names output columns."""
    columns = {}
    for name, array in outputs.items():
        array = np.asarray(array)
        if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
            columns[name] = array.reshape(-1)
        else:
            for i in range(array.shape[1]):
                columns[f"{name}[{i}]"] = array[:, i]
    return columns


def close(actual, expected, rel=1e-2, abs_=1e-6):
    return actual is not None and (
        abs(actual - expected) <= abs_ or abs(actual - expected) <= rel * abs(expected)
    )


# --- figures for the report ---------------------------------------------------------------


def record(section, figures):
    """Print figures and merge them into FIGURES_PATH under section."""
    print(f"\n[{section}] " + json.dumps(figures, indent=2, sort_keys=True))
    data = {}
    if FIGURES_PATH.exists():
        try:
            data = json.loads(FIGURES_PATH.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = {}
    data[section] = figures
    FIGURES_PATH.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
