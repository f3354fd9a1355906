"""The fixture model repository and its reference data, shared by the conformance tests.

Models are written by ``server/fixtures/generate.py``; each version directory holds a
``reference.json`` whose outputs were computed without ONNX Runtime. This module turns
those tensors into numpy arrays and compares what a server returned against them.
"""

import json
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

REPO = Path(__file__).resolve().parents[3]
GENERATOR = REPO / "server" / "fixtures" / "generate.py"
MODELS_DIR = REPO / "server" / "fixtures" / "models"

# Model versions that come with a reference.json, as (model, version).
REFERENCE_CASES = [
    ("mlp", "1"),
    ("mlp", "2"),
    ("iris", "1"),
    ("two_inputs", "1"),
    ("fixed_batch", "1"),
    ("int64_fp64", "1"),
    ("dtypes", "1"),
    ("slow", "1"),
    ("inverted", "1"),
]

# Models whose every version is expected to load.
SERVABLE_MODELS = sorted({model for model, _ in REFERENCE_CASES})

NUMPY_DTYPES = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}

FLOAT_DATATYPES = {"FP16", "BF16", "FP32", "FP64"}

DEFAULT_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}

# skl2onnx computes probabilities in float32 while scikit-learn uses float64.
TOLERANCES = {("iris", "probabilities"): {"rtol": 0.0, "atol": 1e-4}}


def ensure_models():
    """Run the generator unless every reference model is already on disk."""
    expected = [MODELS_DIR / m / v / "reference.json" for m, v in REFERENCE_CASES]
    if not all(path.exists() for path in expected):
        subprocess.run(
            [sys.executable, str(GENERATOR), "--out", str(MODELS_DIR)],
            check=True,
            stdout=subprocess.DEVNULL,
        )


def load_reference(model, version):
    """The parsed reference.json of one model version."""
    path = MODELS_DIR / model / version / "reference.json"
    return json.loads(path.read_text(encoding="utf-8"))


def to_numpy(tensor):
    """A reference tensor as a numpy array; BYTES elements become UTF-8 bytes."""
    datatype = tensor["datatype"]
    data = tensor["data"]
    if datatype == "BYTES":
        data = [text.encode("utf-8") for text in data]
    array = np.array(data, dtype=NUMPY_DTYPES[datatype])
    return array.reshape(tensor["shape"])


def as_text(array):
    """BYTES results as str whether the client returned bytes or str."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


def assert_tensor_matches(model, name, actual, expected, datatype=None):
    """Assert one returned output equals its reference tensor.

    actual is the numpy array a client decoded; datatype, when given, is the datatype
    the server declared for it. Floats compare with a tolerance and must keep the sign
    of reference zeros; every other datatype must match exactly.
    """
    where = f"{model} output {name!r}"
    assert actual is not None, f"{where}: missing from the response"
    if datatype is not None:
        assert datatype == expected["datatype"], f"{where}: datatype {datatype}"
    assert list(actual.shape) == expected["shape"], f"{where}: shape {list(actual.shape)}"
    want = to_numpy(expected)
    if expected["datatype"] == "BYTES":
        assert as_text(actual) == expected["data"], f"{where}: strings differ"
    elif expected["datatype"] in FLOAT_DATATYPES:
        got = np.asarray(actual, dtype=np.float64)
        want = want.astype(np.float64)
        tolerance = TOLERANCES.get((model, name), DEFAULT_TOLERANCE)
        np.testing.assert_allclose(got, want, err_msg=where, **tolerance)
        zeros = want == 0
        np.testing.assert_array_equal(
            np.signbit(got[zeros]), np.signbit(want[zeros]), err_msg=f"{where}: sign of zero"
        )
    else:
        np.testing.assert_array_equal(np.asarray(actual).astype(want.dtype), want, err_msg=where)
