"""The Open Inference Protocol checks `make bench-peers` counts for each peer.

One third-party client, tritonclient, over HTTP and over gRPC, asks a running
server what any client of the protocol would: is it live and ready, is the model
ready, what are the model's inputs, an inference with JSON tensors and one with
binary tensor data (gRPC always sends raw bytes), and a request with a wrong input
name and one with a wrong shape, which must be refused as the client's fault (a
4xx status over HTTP, INVALID_ARGUMENT over gRPC) while the same request put right
is answered. Outputs are compared with ONNX Runtime's own on the same model file.

Each check has a client, and so a connection, of its own, so that a server that
drops the connection after an error fails only that check. A failed check is a
finding about the server, not an error: a server without gRPC fails every gRPC
check. Prints one JSON object per check, one a line:
{"protocol": "HTTP", "name": "server live", "passed": true, "detail": ""}.

Usage: python protocol_checks.py --http HOST:PORT --grpc HOST:PORT --name MODEL --model MODEL.onnx
"""

import argparse
import json

import numpy as np
import onnxruntime
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

# Seconds a single call may take before it counts as failed.
TIMEOUT = 10.0


class Model:
    """The model's first input and output, and ONNX Runtime's answer to one row."""

    def __init__(self, path):
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        self.output_name = session.get_outputs()[0].name
        features = model_input.shape[1]
        self.row = ((np.arange(features, dtype=np.float32) % 7) * 0.25 - 0.5).reshape(1, features)
        self.expected = session.run([self.output_name], {self.input_name: self.row})[0]


def check_answer(result, model):
    """Raises unless result holds the model's output for the row, as ONNX Runtime computes it."""
    answer = result.as_numpy(model.output_name)
    if answer is None:
        raise AssertionError(f"no output named {model.output_name!r}")
    if not np.allclose(answer, model.expected, rtol=1e-5, atol=1e-6):
        expected = model.expected.tolist()
        raise AssertionError(f"output {answer.tolist()} != ONNX Runtime's {expected}")


def refused_as_client_error(well_formed, wrong, client_error):
    """Raises unless wrong() fails with a status client_error accepts, while well_formed(),
    the same request put right, succeeds: only then was it refused for what was wrong."""
    try:
        well_formed()
    except InferenceServerException as error:
        raise AssertionError(f"the same request put right failed too: {error}") from None
    try:
        wrong()
    except InferenceServerException as error:
        if client_error(error.status()):
            return
        raise AssertionError(f"refused with status {error.status()}: {error.message()}") from None
    raise AssertionError("accepted")


def http_checks(name, model):
    """(check name, callable taking a client) pairs over HTTP with JSON and binary tensors."""

    def infer(client, binary, input_name=model.input_name, row=model.row):
        tensor = httpclient.InferInput(input_name, list(row.shape), "FP32")
        tensor.set_data_from_numpy(row, binary_data=binary)
        output = httpclient.InferRequestedOutput(model.output_name, binary_data=binary)
        return client.infer(name, [tensor], outputs=[output])

    def metadata(client):
        answer = client.get_model_metadata(name)
        inputs = {tensor["name"]: tensor["datatype"] for tensor in answer.get("inputs", [])}
        assert answer.get("name") == name, f"named {answer.get('name')!r}"
        assert inputs.get(model.input_name) == "FP32", f"inputs {inputs}"

    def is_4xx(status):
        return status is not None and status.isdigit() and 400 <= int(status) < 500

    return [
        ("server live", lambda client: assert_true(client.is_server_live())),
        ("server ready", lambda client: assert_true(client.is_server_ready())),
        ("model ready", lambda client: assert_true(client.is_model_ready(name))),
        ("model metadata", metadata),
        ("infer, JSON tensors", lambda client: check_answer(infer(client, False), model)),
        ("infer, binary tensor data", lambda client: check_answer(infer(client, True), model)),
        (
            "wrong input name gives 4xx",
            lambda client: refused_as_client_error(
                lambda: infer(client, False),
                lambda: infer(client, False, input_name="no_such_input"),
                is_4xx,
            ),
        ),
        (
            "wrong shape gives 4xx",
            lambda client: refused_as_client_error(
                lambda: infer(client, False),
                lambda: infer(client, False, row=model.row[:, :-1]),
                is_4xx,
            ),
        ),
    ]


def grpc_checks(name, model):
    """(check name, callable taking a client) pairs over gRPC (tensors as raw bytes)."""
    timeout = {"client_timeout": TIMEOUT}

    def infer(client, input_name=model.input_name, row=model.row):
        tensor = grpcclient.InferInput(input_name, list(row.shape), "FP32")
        tensor.set_data_from_numpy(row)
        output = grpcclient.InferRequestedOutput(model.output_name)
        return client.infer(name, [tensor], outputs=[output], **timeout)

    def metadata(client):
        answer = client.get_model_metadata(name, **timeout)
        inputs = {tensor.name: tensor.datatype for tensor in answer.inputs}
        assert answer.name == name, f"named {answer.name!r}"
        assert inputs.get(model.input_name) == "FP32", f"inputs {inputs}"

    def is_invalid_argument(status):
        return status == "StatusCode.INVALID_ARGUMENT"

    return [
        ("server live", lambda client: assert_true(client.is_server_live(**timeout))),
        ("server ready", lambda client: assert_true(client.is_server_ready(**timeout))),
        ("model ready", lambda client: assert_true(client.is_model_ready(name, **timeout))),
        ("model metadata", metadata),
        ("infer", lambda client: check_answer(infer(client), model)),
        (
            "wrong input name gives INVALID_ARGUMENT",
            lambda client: refused_as_client_error(
                lambda: infer(client),
                lambda: infer(client, input_name="no_such_input"),
                is_invalid_argument,
            ),
        ),
        (
            "wrong shape gives INVALID_ARGUMENT",
            lambda client: refused_as_client_error(
                lambda: infer(client),
                lambda: infer(client, row=model.row[:, :-1]),
                is_invalid_argument,
            ),
        ),
    ]


def assert_true(value):
    """Raises unless the server answered yes."""
    if value is not True:
        raise AssertionError(f"answered {value!r}")


def run(protocol, connect, checks):
    """Runs each check with a new client from connect() and prints its outcome as one JSON line."""
    for check_name, check in checks:
        client = connect()
        try:
            check(client)
            passed, detail = True, ""
        except Exception as error:  # any failure is the check's finding
            passed = False
            lines = str(error).strip().splitlines() or [type(error).__name__]
            detail = lines[0][:200]
        finally:
            client.close()
        outcome = {"protocol": protocol, "name": check_name, "passed": passed, "detail": detail}
        print(json.dumps(outcome), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", required=True, help="HOST:PORT of the REST endpoint")
    parser.add_argument("--grpc", required=True, help="HOST:PORT of the gRPC endpoint")
    parser.add_argument("--name", required=True, help="the name the model is served under")
    parser.add_argument("--model", required=True, help="the ONNX file the server serves")
    args = parser.parse_args()
    model = Model(args.model)
    run(
        "HTTP",
        lambda: httpclient.InferenceServerClient(
            args.http, connection_timeout=TIMEOUT, network_timeout=TIMEOUT
        ),
        http_checks(args.name, model),
    )
    run(
        "gRPC",
        lambda: grpcclient.InferenceServerClient(args.grpc),
        grpc_checks(args.name, model),
    )


if __name__ == "__main__":
    main()
