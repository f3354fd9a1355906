"""Concurrent requests: dynamic batching must hand each caller back its own rows.

mlp's config.yaml enables batching, so requests that arrive together are run as one
batch and split back. Rows are random, so a row returned to the wrong caller is
caught. Expected rows come from ONNX Runtime in this process, which
test_fixtures.py checks against the numpy reference.
"""

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from fixture_models import MODELS_DIR

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def mlp_v1():
    """A local ONNX Runtime session of mlp version 1."""
    path = MODELS_DIR / "mlp" / "1" / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def random_requests(sizes, seed):
    """One float32 [size, 16] array per request."""
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, (size, 16)).astype(np.float32) for size in sizes]


def run_together(count, send):
    """Call send(i) for i in range(count) from count threads released at once."""
    barrier = threading.Barrier(count)

    def task(index):
        barrier.wait()
        return send(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(task, range(count)))


def http_json_infer(server, rows, request_id):
    """POST rows to mlp version 1 as JSON; returns (status, parsed body)."""
    body = json.dumps(
        {
            "id": request_id,
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(rows.shape),
                    "data": rows.reshape(-1).tolist(),
                }
            ],
        }
    )
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.request(
            "POST",
            "/v2/models/mlp/versions/1/infer",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def assert_http_answers(server, mlp_v1, requests):
    answers = run_together(len(requests), lambda i: http_json_infer(server, requests[i], str(i)))
    for index, (rows, (status, body)) in enumerate(zip(requests, answers, strict=True)):
        assert status == 200, body
        assert body.get("id") == str(index)
        (output,) = body["outputs"]
        assert output["name"] == "logits"
        assert output["shape"] == [len(rows), 4]
        expected = mlp_v1.run(None, {"input": rows})[0]
        got = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
        np.testing.assert_allclose(got, expected, err_msg=f"request {index}", **TOLERANCE)


def test_http_single_rows_concurrently(server, mlp_v1):
    assert_http_answers(server, mlp_v1, random_requests([1] * 64, seed=64))


def test_http_mixed_batch_sizes_concurrently(server, mlp_v1):
    assert_http_answers(server, mlp_v1, random_requests([1, 2, 3, 4] * 8, seed=32))


def test_grpc_single_rows_concurrently(grpc_client, mlp_v1):
    requests = random_requests([1] * 64, seed=65)

    def send(index):
        infer_input = grpcclient.InferInput("input", [1, 16], "FP32")
        infer_input.set_data_from_numpy(requests[index])
        return grpc_client.infer("mlp", [infer_input], model_version="1").as_numpy("logits")

    for index, (rows, logits) in enumerate(
        zip(requests, run_together(len(requests), send), strict=True)
    ):
        expected = mlp_v1.run(None, {"input": rows})[0]
        np.testing.assert_allclose(logits, expected, err_msg=f"request {index}", **TOLERANCE)
