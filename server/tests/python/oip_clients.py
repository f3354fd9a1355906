"""Send reference inputs through tritonclient, over HTTP or gRPC, and read the results back.

Both protocols return the same shape of answer, ``{output name: (datatype, array)}``,
so tests can compare either against reference.json in one way.
"""

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from fixture_models import to_numpy


def http_infer(client, model, reference, binary, version="", outputs=None, request_id=""):
    """Infer over HTTP with JSON tensors, or binary ones when binary is true.

    tritonclient only sends BF16 as binary data, so BF16 tensors travel in binary even
    in a JSON request; this also checks that a server accepts a mix of both.
    outputs names the outputs to request (all of the reference's when None).
    """
    inputs = []
    for name, tensor in reference["inputs"].items():
        array = to_numpy(tensor)
        infer_input = httpclient.InferInput(name, list(array.shape), tensor["datatype"])
        infer_input.set_data_from_numpy(array, binary_data=binary or tensor["datatype"] == "BF16")
        inputs.append(infer_input)
    requested = [
        httpclient.InferRequestedOutput(
            name, binary_data=binary or reference["outputs"][name]["datatype"] == "BF16"
        )
        for name in (outputs if outputs is not None else reference["outputs"])
    ]
    result = client.infer(
        model, inputs, model_version=version, outputs=requested, request_id=request_id
    )
    response = result.get_response()
    decoded = {
        output["name"]: (output["datatype"], result.as_numpy(output["name"]))
        for output in response["outputs"]
    }
    return response, decoded


def grpc_infer(client, model, reference, version="", outputs=None, request_id=""):
    """Infer over gRPC; tritonclient sends every tensor in raw_input_contents."""
    inputs = []
    for name, tensor in reference["inputs"].items():
        array = to_numpy(tensor)
        infer_input = grpcclient.InferInput(name, list(array.shape), tensor["datatype"])
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    requested = [
        grpcclient.InferRequestedOutput(name)
        for name in (outputs if outputs is not None else reference["outputs"])
    ]
    result = client.infer(
        model, inputs, model_version=version, outputs=requested, request_id=request_id
    )
    response = result.get_response()
    decoded = {
        output.name: (output.datatype, result.as_numpy(output.name)) for output in response.outputs
    }
    return response, decoded
