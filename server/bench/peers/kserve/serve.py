"""KServe's Python model server serving one ONNX file, a peer of `make bench-peers`.

A kserve.Model subclass wrapping one ONNX Runtime session with one thread, served
by kserve.ModelServer over the V2 (Open Inference) protocol, REST and gRPC, with
the command line KServe's own servers take (--http_port, --grpc_port, --workers,
...; see kserve.model_server.parser). One worker process (KServe's default), and
no per-request log lines, as for the other peers: latency logging off, and
uvicorn's access log and the kserve.trace logger (two lines per request from
KServe's timing middleware, which still runs) at WARNING.

The response is built as KServe's own runtimes build theirs
(kserve.utils.utils.get_predict_response), so that binary outputs are sent when
asked for. The model checks nothing itself: a wrong input name or shape fails in
session.run, and the answer is what KServe makes of that exception.

Usage: python serve.py --model MODEL.onnx --model_name NAME --http_port P --grpc_port P
"""

import argparse
import logging

import kserve
import onnxruntime
from kserve import InferOutput, InferRequest, InferResponse, model_server
from kserve.utils.utils import from_np_dtype, generate_uuid

# The Open Inference Protocol's names for the ONNX tensor types the fixtures use.
DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64"}


def metadata(tensors):
    """KServe's metadata for ONNX Runtime's description of some tensors."""
    return [
        {
            "name": tensor.name,
            "datatype": DATATYPES.get(tensor.type, tensor.type),
            "shape": [dim if isinstance(dim, int) else -1 for dim in tensor.shape],
        }
        for tensor in tensors
    ]


class OnnxModel(kserve.Model):
    """Serves the ONNX file at path under name."""

    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            self.path, options, providers=["CPUExecutionProvider"]
        )
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def get_input_types(self):
        return metadata(self.session.get_inputs())

    def get_output_types(self):
        return metadata(self.session.get_outputs())

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        feeds = {tensor.name: tensor.as_numpy() for tensor in payload.inputs}
        results = self.session.run(self.output_names, feeds)
        outputs = []
        for name, result in zip(self.output_names, results):
            datatype = from_np_dtype(result.dtype)
            output = InferOutput(name=name, shape=list(result.shape), datatype=datatype)
            output.set_data_from_numpy(result, binary_data=payload.use_binary_outputs)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id or generate_uuid(),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def main():
    parser = argparse.ArgumentParser(
        parents=[model_server.parser], description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", required=True, help="the ONNX file to serve")
    args, _ = parser.parse_known_args()
    server = kserve.ModelServer(workers=1, enable_latency_logging=False)
    for per_request in ("uvicorn.access", "kserve.trace"):
        logging.getLogger(per_request).setLevel(logging.WARNING)
    server.start([OnnxModel(args.model_name, args.model)])


if __name__ == "__main__":
    main()
