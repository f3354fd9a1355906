"""The seed's batch pattern, as `make bench` measures it against `sluice-server batch`.

Read the whole CSV with pandas, run ONNX Runtime (one intra-op and one inter-op
thread) over it in batches, and write the predictions with the id column as CSV.
"""

import argparse

import numpy as np
import onnxruntime as ort
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    frame = pd.read_csv(args.input)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    features = frame.drop(columns=["id"]).to_numpy(np.float32)
    outputs = [
        session.run(None, {name: features[start : start + args.batch_size]})[0]
        for start in range(0, len(features), args.batch_size)
    ]
    logits = np.concatenate(outputs)
    predictions = pd.DataFrame(logits, columns=[f"logits_{i}" for i in range(logits.shape[1])])
    predictions.insert(0, "id", frame["id"])
    predictions.to_csv(args.output, index=False)


if __name__ == "__main__":
    main()
