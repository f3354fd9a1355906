"""The seed's FastAPI + ONNX Runtime pattern, a peer of `make bench-peers`.

A plain FastAPI app under uvicorn, one worker process: one ONNX Runtime session
with one thread, and one POST endpoint that takes an Open Inference Protocol v2
JSON request, runs session.run on it and answers v2 JSON. It has no health or
metadata routes and no error handling of its own, as the pattern has none; what
the protocol checks find is what such an app does. The handler is `async`, so
session.run runs on the event loop: with one worker and one ONNX Runtime thread
a thread pool would only add a hand-off per request. Per-request access logs are
off, as they are for the other peers.

Usage: python app.py --model MODEL.onnx --name NAME --port PORT
"""

import argparse

import numpy as np
import onnxruntime
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class RequestInput(BaseModel):
    """One input tensor of a v2 request, its data flat and in row-major order."""

    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferenceRequest(BaseModel):
    """A v2 inference request."""

    inputs: list[RequestInput]


def make_app(model_path, model_name):
    """The app serving the ONNX file at model_path as model_name."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model_path, options, providers=["CPUExecutionProvider"]
    )
    app = FastAPI()

    @app.post(f"/v2/models/{model_name}/infer")
    async def infer(request: InferenceRequest):
        feeds = {
            tensor.name: np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
            for tensor in request.inputs
        }
        names = [output.name for output in session.get_outputs()]
        results = session.run(names, feeds)
        return {
            "model_name": model_name,
            "outputs": [
                {
                    "name": name,
                    "datatype": "FP32",
                    "shape": list(result.shape),
                    "data": result.ravel().tolist(),
                }
                for name, result in zip(names, results)
            ],
        }

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the ONNX file to serve")
    parser.add_argument("--name", required=True, help="the model's name in the URL")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.model, args.name),
        host="127.0.0.1",
        port=args.port,
        workers=1,
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
