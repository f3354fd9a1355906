"""An ONNX Runtime runtime for MLServer, which has none built in: a custom MLModel,
as MLServer's documentation describes custom runtimes.

load() opens one ONNX Runtime session with one thread and fills the model's
metadata (its inputs and outputs) from it; predict() decodes the request's
tensors with MLServer's NumpyCodec, runs session.run and encodes the outputs. It
checks nothing itself: a wrong input name or shape fails in session.run, and the
answer is what MLServer makes of that exception.
"""

import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor
from mlserver.utils import get_model_uri

# The Open Inference Protocol's names for the ONNX tensor types the fixtures use.
DATATYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(int64)": "INT64"}


def metadata(tensors):
    """MLServer's metadata for ONNX Runtime's description of some tensors."""
    return [
        MetadataTensor(
            name=tensor.name,
            datatype=DATATYPES.get(tensor.type, tensor.type),
            shape=[dim if isinstance(dim, int) else -1 for dim in tensor.shape],
        )
        for tensor in tensors
    ]


class OnnxRuntimeModel(MLModel):
    """Serves the ONNX file at the model settings' parameters.uri."""

    async def load(self) -> bool:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            await get_model_uri(self.settings), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = metadata(self._session.get_inputs())
        self.outputs = metadata(self._session.get_outputs())
        self._output_names = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {
            request_input.name: self.decode(request_input, default_codec=NumpyCodec)
            for request_input in payload.inputs
        }
        results = self._session.run(self._output_names, feeds)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name, result)
                for name, result in zip(self._output_names, results)
            ],
        )
