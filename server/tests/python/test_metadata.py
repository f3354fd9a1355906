"""Health, server metadata, model metadata and readiness over HTTP and gRPC.

Expected model metadata is read from the ONNX files with the onnx package, so the
server's answers are checked against the models rather than against a copied table.
"""

import json

import onnx
import pytest
from tritonclient.utils import InferenceServerException

from fixture_models import MODELS_DIR, SERVABLE_MODELS, assert_tensor_matches, load_reference
from oip_clients import http_infer

ONNX_TO_OIP = {
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.STRING: "BYTES",
}


def tensor_contract(value_infos, skip=()):
    """{name: (datatype, shape)} of ONNX graph inputs or outputs; dynamic dims are -1."""
    contract = {}
    for info in value_infos:
        if info.name in skip:
            continue
        tensor_type = info.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        contract[info.name] = (ONNX_TO_OIP[tensor_type.elem_type], shape)
    return contract


def expected_metadata(model):
    """What metadata for model must say: its versions and the newest version's tensors."""
    versions = sorted((p.name for p in (MODELS_DIR / model).iterdir() if p.is_dir()), key=int)
    graph = onnx.load(MODELS_DIR / model / versions[-1] / "model.onnx").graph
    initializers = {tensor.name for tensor in graph.initializer}
    return {
        "versions": versions,
        "inputs": tensor_contract(graph.input, skip=initializers),
        "outputs": tensor_contract(graph.output),
    }


def http_tensors(entries):
    return {e["name"]: (e["datatype"], list(e["shape"])) for e in entries}


def grpc_tensors(entries):
    return {e.name: (e.datatype, list(e.shape)) for e in entries}


def test_server_is_live_and_ready(http_client, grpc_client):
    assert http_client.is_server_live()
    assert http_client.is_server_ready()
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()


def test_http_server_metadata(http_client):
    metadata = http_client.get_server_metadata()
    assert isinstance(metadata["name"], str) and metadata["name"]
    assert isinstance(metadata["version"], str) and metadata["version"]
    assert isinstance(metadata["extensions"], list)
    assert all(isinstance(extension, str) for extension in metadata["extensions"])


def test_grpc_server_metadata(grpc_client):
    metadata = grpc_client.get_server_metadata()
    assert metadata.name
    assert metadata.version
    assert all(isinstance(extension, str) for extension in metadata.extensions)


@pytest.mark.parametrize("model", SERVABLE_MODELS)
def test_http_model_metadata(http_client, model):
    expected = expected_metadata(model)
    metadata = http_client.get_model_metadata(model)
    assert metadata["name"] == model
    assert metadata["platform"] == "onnx_onnxv1"
    assert sorted(metadata["versions"], key=int) == expected["versions"]
    assert http_tensors(metadata["inputs"]) == expected["inputs"]
    assert http_tensors(metadata["outputs"]) == expected["outputs"]


@pytest.mark.parametrize("model", SERVABLE_MODELS)
def test_grpc_model_metadata(grpc_client, model):
    expected = expected_metadata(model)
    metadata = grpc_client.get_model_metadata(model)
    assert metadata.name == model
    assert metadata.platform == "onnx_onnxv1"
    assert sorted(metadata.versions, key=int) == expected["versions"]
    assert grpc_tensors(metadata.inputs) == expected["inputs"]
    assert grpc_tensors(metadata.outputs) == expected["outputs"]


def test_mlp_metadata_contract(http_client):
    """The mlp contract spelled out, in case the ONNX file itself drifts."""
    metadata = http_client.get_model_metadata("mlp")
    assert sorted(metadata["versions"]) == ["1", "2"]
    assert http_tensors(metadata["inputs"]) == {"input": ("FP32", [-1, 16])}
    assert http_tensors(metadata["outputs"]) == {"logits": ("FP32", [-1, 4])}


@pytest.mark.parametrize("version", ["1", "2"])
def test_versioned_model_metadata(http_client, grpc_client, version):
    http_metadata = http_client.get_model_metadata("mlp", model_version=version)
    grpc_metadata = grpc_client.get_model_metadata("mlp", model_version=version)
    assert http_metadata["name"] == grpc_metadata.name == "mlp"
    assert http_tensors(http_metadata["inputs"]) == {"input": ("FP32", [-1, 16])}


@pytest.mark.parametrize("model", SERVABLE_MODELS)
def test_model_ready(http_client, grpc_client, model):
    assert http_client.is_model_ready(model)
    assert grpc_client.is_model_ready(model)


@pytest.mark.parametrize("version", ["1", "2"])
def test_model_version_ready(http_client, grpc_client, version):
    assert http_client.is_model_ready("mlp", model_version=version)
    assert grpc_client.is_model_ready("mlp", model_version=version)


def test_broken_model_is_not_ready_over_http(server):
    response = server.request("GET", "/v2/models/broken/ready")
    assert response.status in (400, 404, 503), response


def test_broken_model_metadata_does_not_claim_ready(server):
    """Metadata of a model that failed to load is an error or says it is not ready."""
    response = server.request("GET", "/v2/models/broken")
    if response.status == 200:
        assert json.loads(response.body).get("ready") is False, response.body
    else:
        assert 400 <= response.status < 600, response


def test_broken_model_is_not_ready_over_grpc(grpc_client):
    try:
        ready = grpc_client.is_model_ready("broken")
    except InferenceServerException:
        ready = False
    assert not ready


def test_broken_model_refuses_inference(server):
    body = json.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1], "data": [0.0]}]}
    )
    response = server.request("POST", "/v2/models/broken/infer", body=body)
    assert 400 <= response.status < 600, response
    assert isinstance(json.loads(response.body)["error"], str)


def test_other_models_serve_despite_broken_model(http_client):
    reference = load_reference("fixed_batch", "1")
    _, decoded = http_infer(http_client, "fixed_batch", reference, binary=False)
    datatype, y = decoded["y"]
    assert_tensor_matches("fixed_batch", "y", y, reference["outputs"]["y"], datatype)
