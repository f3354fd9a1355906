"""Inference through tritonclient, as a third-party client, compared with reference.json."""

import pytest

from fixture_models import REFERENCE_CASES, assert_tensor_matches, load_reference
from oip_clients import grpc_infer, http_infer

PROTOCOLS = ["http-json", "http-binary", "grpc"]


def infer(protocol, http_client, grpc_client, model, reference, **options):
    """Run one request over the named protocol; returns (response, decoded outputs)."""
    if protocol == "grpc":
        return grpc_infer(grpc_client, model, reference, **options)
    return http_infer(http_client, model, reference, protocol == "http-binary", **options)


def assert_outputs_match(model, reference, decoded):
    """Every reference output came back, and matches; nothing else came back."""
    assert set(decoded) == set(reference["outputs"])
    for name, expected in reference["outputs"].items():
        datatype, array = decoded[name]
        assert_tensor_matches(model, name, array, expected, datatype)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("model,version", REFERENCE_CASES)
def test_infer_matches_reference(protocol, http_client, grpc_client, model, version):
    reference = load_reference(model, version)
    response, decoded = infer(protocol, http_client, grpc_client, model, reference, version=version)
    assert_outputs_match(model, reference, decoded)
    model_name, model_version = (
        (response.model_name, response.model_version)
        if protocol == "grpc"
        else (response["model_name"], response.get("model_version", version))
    )
    assert model_name == model
    assert model_version in ("", version)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unversioned_request_uses_one_served_version(protocol, http_client, grpc_client):
    """Without a version, mlp answers as exactly one of its versions (server policy).

    Both mlp versions share their reference inputs, so either reference applies.
    """
    reference = load_reference("mlp", "1")
    _, decoded = infer(protocol, http_client, grpc_client, "mlp", reference)
    datatype, logits = decoded["logits"]
    matching = []
    for version in ("1", "2"):
        expected = load_reference("mlp", version)["outputs"]["logits"]
        try:
            assert_tensor_matches("mlp", "logits", logits, expected, datatype)
        except AssertionError:
            continue
        matching.append(version)
    assert len(matching) == 1, f"logits match versions {matching}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_only_requested_outputs_are_returned(protocol, http_client, grpc_client):
    reference = load_reference("iris", "1")
    _, decoded = infer(
        protocol, http_client, grpc_client, "iris", reference, outputs=["probabilities"]
    )
    assert list(decoded) == ["probabilities"]
    datatype, array = decoded["probabilities"]
    assert_tensor_matches(
        "iris", "probabilities", array, reference["outputs"]["probabilities"], datatype
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_request_id_is_echoed(protocol, http_client, grpc_client):
    reference = load_reference("two_inputs", "1")
    request_id = f"conformance-{protocol}-42"
    response, _ = infer(
        protocol, http_client, grpc_client, "two_inputs", reference, request_id=request_id
    )
    echoed = response.id if protocol == "grpc" else response.get("id")
    assert echoed == request_id
