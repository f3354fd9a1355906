"""Bad requests get precise errors, and the server keeps serving afterwards.

HTTP requests are sent with http.client so the exact status and body are visible; the
Open Inference Protocol wants errors as a JSON object ``{"error": "..."}``.
"""

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fixture_models import assert_tensor_matches, load_reference
from oip_clients import grpc_infer, http_infer


def mlp_input(name="input", datatype="FP32", shape=(1, 16), data=None):
    """One JSON input tensor for mlp, valid unless an argument says otherwise."""
    count = int(np.prod(shape))
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(shape),
        "data": data if data is not None else [0.5] * count,
    }


def post_infer(server, path, body, headers=None):
    """POST a body (a dict to encode as JSON, or raw bytes) to an inference path."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return server.request("POST", path, body=body, headers=all_headers)


def error_message(response):
    """The error text of an error response; fails unless the body is {"error": str}."""
    payload = json.loads(response.body)
    assert isinstance(payload, dict), payload
    assert isinstance(payload.get("error"), str) and payload["error"], payload
    return payload["error"]


def binary_request(declared_size, actual_bytes):
    """An mlp request whose binary input declares declared_size bytes."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 16],
                    "parameters": {"binary_data_size": declared_size},
                }
            ]
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    return header + actual_bytes, headers


SHORT_BINARY_BODY, SHORT_BINARY_HEADERS = binary_request(64, bytes(10))

# (test id, path, body, extra headers, expected statuses, text the message must contain)
HTTP_ERROR_CASES = [
    (
        "unknown-model",
        "/v2/models/no_such_model/infer",
        {"inputs": [mlp_input()]},
        None,
        {404},
        "no_such_model",
    ),
    (
        "unknown-version",
        "/v2/models/mlp/versions/99/infer",
        {"inputs": [mlp_input()]},
        None,
        {400, 404},
        None,
    ),
    ("malformed-json", "/v2/models/mlp/infer", b'{"inputs": [', None, {400}, None),
    ("not-an-object", "/v2/models/mlp/infer", b"[1, 2, 3]", None, {400}, None),
    ("missing-inputs", "/v2/models/mlp/infer", {"outputs": []}, None, {400}, None),
    (
        "wrong-input-name",
        "/v2/models/mlp/infer",
        {"inputs": [mlp_input(name="not_an_input")]},
        None,
        {400},
        "not_an_input",
    ),
    (
        "element-count-mismatch",
        "/v2/models/mlp/infer",
        {"inputs": [mlp_input(data=[0.5] * 15)]},
        None,
        {400},
        None,
    ),
    (
        "wrong-inner-dimension",
        "/v2/models/mlp/infer",
        {"inputs": [mlp_input(shape=(1, 8))]},
        None,
        {400},
        None,
    ),
    ("wrong-rank", "/v2/models/mlp/infer", {"inputs": [mlp_input(shape=(16,))]}, None, {400}, None),
    (
        "zero-rows",
        "/v2/models/mlp/infer",
        {"inputs": [mlp_input(shape=(0, 16), data=[])]},
        None,
        {400},
        "[0, 16]",
    ),
    (
        "fixed-dimension-exceeded",
        "/v2/models/fixed_batch/infer",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [1.0] * 8}]},
        None,
        {400},
        None,
    ),
    (
        "wrong-datatype",
        "/v2/models/mlp/infer",
        {"inputs": [mlp_input(datatype="FP64")]},
        None,
        {400},
        None,
    ),
    (
        "data-not-numbers",
        "/v2/models/mlp/infer",
        {"inputs": [mlp_input(data=["a"] * 16)]},
        None,
        {400},
        None,
    ),
    (
        "missing-second-input",
        "/v2/models/two_inputs/infer",
        {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1.0] * 4}]},
        None,
        {400},
        None,
    ),
    (
        "unknown-output",
        "/v2/models/iris/infer",
        {
            "inputs": [
                {
                    "name": "float_input",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "data": [5.1, 3.5, 1.4, 0.2],
                }
            ],
            "outputs": [{"name": "not_an_output"}],
        },
        None,
        {400},
        "not_an_output",
    ),
    (
        "binary-data-too-short",
        "/v2/models/mlp/infer",
        SHORT_BINARY_BODY,
        SHORT_BINARY_HEADERS,
        {400},
        None,
    ),
]


@pytest.mark.parametrize(
    "path,body,headers,statuses,mentions",
    [case[1:] for case in HTTP_ERROR_CASES],
    ids=[case[0] for case in HTTP_ERROR_CASES],
)
def test_http_error(server, path, body, headers, statuses, mentions):
    response = post_infer(server, path, body, headers)
    assert response.status in statuses, (response.status, response.body)
    message = error_message(response)
    if mentions is not None:
        assert mentions in message


def grpc_error_status(grpc_client, model, infer_input):
    """The gRPC status name of a request that must fail."""
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.infer(model, [infer_input])
    return raised.value.status()


def test_grpc_unknown_model_is_not_found(grpc_client):
    infer_input = grpcclient.InferInput("input", [1, 16], "FP32")
    infer_input.set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
    assert grpc_error_status(grpc_client, "no_such_model", infer_input) == "StatusCode.NOT_FOUND"


def test_grpc_shape_not_matching_data_is_invalid(grpc_client):
    infer_input = grpcclient.InferInput("input", [1, 16], "FP32")
    infer_input.set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
    infer_input.set_shape([1, 15])
    assert grpc_error_status(grpc_client, "mlp", infer_input) == "StatusCode.INVALID_ARGUMENT"


def test_grpc_shape_not_matching_model_is_invalid(grpc_client):
    infer_input = grpcclient.InferInput("input", [2, 8], "FP32")
    infer_input.set_data_from_numpy(np.zeros((2, 8), dtype=np.float32))
    assert grpc_error_status(grpc_client, "mlp", infer_input) == "StatusCode.INVALID_ARGUMENT"


def test_grpc_wrong_datatype_is_invalid(grpc_client):
    infer_input = grpcclient.InferInput("input", [1, 16], "FP64")
    infer_input.set_data_from_numpy(np.zeros((1, 16), dtype=np.float64))
    assert grpc_error_status(grpc_client, "mlp", infer_input) == "StatusCode.INVALID_ARGUMENT"


def test_grpc_wrong_input_name_is_invalid(grpc_client):
    infer_input = grpcclient.InferInput("not_an_input", [1, 16], "FP32")
    infer_input.set_data_from_numpy(np.zeros((1, 16), dtype=np.float32))
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.infer("mlp", [infer_input])
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "not_an_input" in raised.value.message()


def test_grpc_zero_rows_are_invalid_naming_the_shape(grpc_client):
    infer_input = grpcclient.InferInput("input", [0, 16], "FP32")
    infer_input.set_data_from_numpy(np.zeros((0, 16), dtype=np.float32))
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.infer("mlp", [infer_input])
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "[0, 16]" in raised.value.message()


def test_server_still_serves_after_errors(server, http_client, grpc_client):
    """Runs last in this module: the bad requests above left the server healthy."""
    assert server.process.poll() is None, "sluice-server died"
    reference = load_reference("mlp", "1")
    expected = reference["outputs"]["logits"]
    for decoded in (
        http_infer(http_client, "mlp", reference, binary=False, version="1")[1],
        grpc_infer(grpc_client, "mlp", reference, version="1")[1],
    ):
        datatype, logits = decoded["logits"]
        assert_tensor_matches("mlp", "logits", logits, expected, datatype)
