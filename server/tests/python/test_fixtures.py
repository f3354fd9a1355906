"""Checks on the fixture models themselves; these need no server.

Every reference.json was computed without ONNX Runtime (numpy, scikit-learn), so
agreement with ONNX Runtime here means the models and their references can be trusted
when the server's answers are compared against them.
"""

import filecmp
import subprocess
import sys

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf
import pytest
import onnx
from onnx import TensorProto, helper

from fixture_models import (
    GENERATOR,
    MODELS_DIR,
    REFERENCE_CASES,
    assert_tensor_matches,
    load_reference,
    to_numpy,
)


def bfloat16_as_float(model):
    """Give the model float32 inputs and outputs wherever it has bfloat16 ones.

    ONNX Runtime's Python API cannot pass bfloat16 arrays, so Cast nodes convert at
    the edges; the reference's bfloat16 values are exact in float32 both ways.
    """
    graph = model.graph
    casts_in, casts_out = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.BFLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
            original, value.name = value.name, f"{value.name}_float"
            casts_in.append(
                helper.make_node("Cast", [value.name], [original], to=TensorProto.BFLOAT16)
            )
    for value in graph.output:
        if value.type.tensor_type.elem_type == TensorProto.BFLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
            inner = f"{value.name}_bfloat16"
            for node in graph.node:
                node.output[:] = [inner if out == value.name else out for out in node.output]
            casts_out.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT))
    nodes = casts_in + list(graph.node) + casts_out
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def run_onnxruntime(model, version, reference):
    """Run a model on its reference inputs with ONNX Runtime; outputs by name."""
    path = MODELS_DIR / model / version / "model.onnx"
    proto = bfloat16_as_float(onnx.load(path))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for name, tensor in reference["inputs"].items():
        if tensor["datatype"] == "BF16":
            feeds[f"{name}_float"] = np.array(tensor["data"], dtype=np.float32).reshape(
                tensor["shape"]
            )
        elif tensor["datatype"] == "BYTES":
            feeds[name] = np.array(tensor["data"], dtype=object).reshape(tensor["shape"])
        else:
            feeds[name] = to_numpy(tensor)
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


@pytest.mark.parametrize("model,version", REFERENCE_CASES)
def test_onnxruntime_agrees_with_reference(model, version):
    reference = load_reference(model, version)
    results = run_onnxruntime(model, version, reference)
    assert set(results) == set(reference["outputs"])
    for name, expected in reference["outputs"].items():
        assert_tensor_matches(model, name, results[name], expected)


def test_mlp_versions_differ():
    """The version tests can only tell versions apart if their answers differ."""
    v1 = to_numpy(load_reference("mlp", "1")["outputs"]["logits"])
    v2 = to_numpy(load_reference("mlp", "2")["outputs"]["logits"])
    assert not np.allclose(v1, v2, atol=1e-2)


def predicted_classes(model, version, rows):
    session = ort.InferenceSession(str(MODELS_DIR / model / version / "model.onnx"))
    return np.argmax(session.run(None, {"input": rows})[0], axis=1)


def test_mlp_v2_is_a_retrain_that_mostly_agrees_and_inverted_disagrees():
    """What the prediction-agreement tests rely on: on random normal rows mlp v2
    picks v1's class on most rows, and inverted on few."""
    rows = np.random.default_rng(5).normal(0, 1, (4000, 16)).astype(np.float32)
    v1 = predicted_classes("mlp", "1", rows)
    v2 = predicted_classes("mlp", "2", rows)
    inverted = predicted_classes("inverted", "1", rows)
    assert 0.85 < np.mean(v1 == v2) < 0.99
    assert np.mean(v1 == inverted) < 0.1


def test_faulty_model_serves_zeros_and_fails_real_rows():
    """Warm-up sends zeros, which pass (as mlp v1); any real row fails the run."""
    faulty = ort.InferenceSession(str(MODELS_DIR / "faulty" / "1" / "model.onnx"))
    mlp = ort.InferenceSession(str(MODELS_DIR / "mlp" / "1" / "model.onnx"))
    zeros = np.zeros((3, 16), dtype=np.float32)
    np.testing.assert_array_equal(
        faulty.run(None, {"input": zeros})[0], mlp.run(None, {"input": zeros})[0]
    )
    rows = to_numpy(load_reference("mlp", "1")["inputs"]["input"])
    with pytest.raises(Exception, match="out of data bounds"):
        faulty.run(None, {"input": rows})


def test_broken_model_does_not_load():
    with pytest.raises(InvalidProtobuf):
        ort.InferenceSession(str(MODELS_DIR / "broken" / "1" / "model.onnx"))


def model_files(repository):
    """Files inside the model folders of a repository, relative to it.

    Top-level files (such as the stamp `make deps` leaves) are not models: the server
    ignores them, and so does this comparison. Reference profiles are written by
    `make build` with the server's `profile` command, not by the generator.
    """
    return sorted(
        path.relative_to(repository)
        for path in repository.glob("*/**/*")
        if path.is_file() and path.name != "profile.json"
    )


def test_generator_is_deterministic(tmp_path):
    """A fresh run writes exactly the files in the repository the server tests use."""
    subprocess.run(
        [sys.executable, str(GENERATOR), "--out", str(tmp_path)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    fresh = model_files(tmp_path)
    served = model_files(MODELS_DIR)
    assert fresh == served, "file lists differ; rerun server/fixtures/generate.py"
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, MODELS_DIR, fresh, shallow=False)
    assert not mismatch and not errors, (
        f"{mismatch + errors} differ from a fresh run: the generator is not deterministic "
        "or server/fixtures/models is stale (rerun server/fixtures/generate.py)"
    )
