"""MLServer serving one ONNX file with the runtime in runtime.py, a peer of
`make bench-peers`.

What `mlserver start` does with a settings.json and a model-settings.json, with
the ports from the command line: MLServer's defaults except for one worker
process (parallel_workers 0: inference runs in the server's own process, as in
the other peers) and no per-request access log (debug off), as for the other
peers. Metrics stay on, on their own port, as MLServer serves them by default.

Usage: python serve.py --model MODEL.onnx --name NAME --http-port P --grpc-port P --metrics-port P
"""

import argparse
import asyncio

from mlserver import MLServer
from mlserver.settings import ModelParameters, ModelSettings, Settings

from runtime import OnnxRuntimeModel


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the ONNX file to serve")
    parser.add_argument("--name", required=True, help="the model's name in the URL")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()
    settings = Settings(
        host="127.0.0.1",
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        parallel_workers=0,
        debug=False,
    )
    model = ModelSettings(
        name=args.name,
        implementation=OnnxRuntimeModel,
        parameters=ModelParameters(uri=args.model),
    )
    asyncio.run(MLServer(settings).start([model]))


if __name__ == "__main__":
    main()
