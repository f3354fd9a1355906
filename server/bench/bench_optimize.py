"""`make bench-optimize`: `sluice-server optimize` against ONNX Runtime's own Python
tools, on the same models, measured by one harness on the same threads:
`--mode int8-dynamic` against `quantize_dynamic`, `--mode int8-static` against
`quantize_static` (QDQ, MinMax calibration on the same rows), and `--mode fp16` against
`onnxruntime.transformers.float16.convert_float_to_float16` (the FP16 converter
ONNX Runtime ships, with `keep_io_types=True`, as Sluice keeps them).

Models:
- `digits-mlp`: a classifier with real weights, a scikit-learn MLP (64-512-512-10)
  trained on the digits dataset that scikit-learn ships, exported with skl2onnx;
  agreement is measured on its held-out rows. Cached under $SLUICE_CACHE.
- the `wide` (16-1024-1024-4) and `mlp` (16-32-4) fixtures, on seeded random rows.

For each model it prints size, median latency at batch 1 and 32 (one ONNX Runtime
intra-op thread, pinned to one core by `make bench-optimize`, the models measured
in interleaved rounds), and top-1 agreement with the FP32 model, for the original,
for Sluice's and ONNX Runtime's INT8 (per-channel, reduce_range, the same settings
as Sluice's default), and for Sluice's and ONNX Runtime's FP16. The "time s" column is how long each tool
took to write its model.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)
from onnxruntime.transformers.float16 import convert_float_to_float16

REPO = pathlib.Path(__file__).resolve().parents[2]
SERVER = pathlib.Path(os.environ.get("SLUICE_SERVER_BIN", REPO / "target/release/sluice-server"))
CACHE = pathlib.Path(os.environ.get("SLUICE_CACHE", pathlib.Path.home() / ".cache/sluice")) / "bench-optimize"
FIXTURES = REPO / "server/fixtures/models"
THREADS = 1


def digits_mlp():
    """The trained digits MLP (cached), its held-out rows and 500 training rows
    (INT8 static's calibration)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    train_x, test_x, train_y, _ = train_test_split(x, y, test_size=0.3, random_state=0)
    path = CACHE / "digits-mlp.onnx"
    if not path.exists():
        from skl2onnx import to_onnx
        from sklearn.neural_network import MLPClassifier

        model = MLPClassifier(hidden_layer_sizes=(512, 512), max_iter=60, random_state=0)
        model.fit(train_x, train_y)
        onnx_model = to_onnx(model, train_x[:1], options={id(model): {"zipmap": False}},
                             target_opset=17)
        CACHE.mkdir(parents=True, exist_ok=True)
        path.write_bytes(onnx_model.SerializeToString())
    return path, test_x, train_x[:500]


class Rows(CalibrationDataReader):
    """ONNX Runtime's calibration reader over the same rows Sluice calibrates on."""

    def __init__(self, name, rows):
        self.batches = iter([{name: rows[i:i + 64]} for i in range(0, len(rows), 64)])

    def get_next(self):
        return next(self.batches, None)


def random_rows(width, rows=1000, seed=7):
    return np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(sess, feed):
    for _ in range(10):
        sess.run(None, feed)
    times = []
    started = time.perf_counter()
    while len(times) < 30 or (time.perf_counter() - started < 0.3 and len(times) < 5000):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def top1(reference, outputs):
    """Share of rows whose arg-max (or label) equals the FP32 model's, for the
    first output (skl2onnx's `label`, the fixtures' `logits`)."""
    a, b = reference[0], outputs[0]
    if a.ndim == 2 and a.shape[1] > 1:
        a, b = a.argmax(axis=1), b.argmax(axis=1)
    return float(np.mean(a == b))


ROUNDS = 5


def measure(paths, rows):
    """Size, latencies and agreement of each model in `paths` (the FP32 model
    first). The latencies are the median over ROUNDS rounds that take the models
    in turn, so that a noisy moment on the machine hits all of them alike."""
    sessions = [session(p) for p in paths]
    name = sessions[0].get_inputs()[0].name
    reference = sessions[0].run(None, {name: rows})
    timings = [{"b1": [], "b32": []} for _ in paths]
    for _ in range(ROUNDS):
        for sess, timing in zip(sessions, timings):
            timing["b1"].append(median_ms(sess, {name: rows[:1]}))
            timing["b32"].append(median_ms(sess, {name: rows[:32]}))
    return [
        {
            "size": path.stat().st_size,
            "b1": float(np.median(timing["b1"])),
            "b32": float(np.median(timing["b32"])),
            "agreement": top1(reference, sess.run(None, {name: rows})),
        }
        for path, sess, timing in zip(paths, sessions, timings)
    ]


def main():
    out = CACHE / "out"
    out.mkdir(parents=True, exist_ok=True)
    digits_path, digits_rows, digits_calibration = digits_mlp()
    models = [
        ("digits-mlp", digits_path, digits_rows, digits_calibration),
        ("wide", FIXTURES / "wide/1/model.onnx", random_rows(16), random_rows(16, 500, seed=8)),
        ("mlp", FIXTURES / "mlp/1/model.onnx", random_rows(16), random_rows(16, 500, seed=8)),
    ]
    print(f"one ONNX Runtime {ort.__version__} intra-op thread; latency: median of {ROUNDS} interleaved rounds; "
          "top-1 agreement with the FP32 model")
    header = f"{'model':<12}{'variant':<14}{'size KB':>10}{'ratio':>8}{'b1 ms':>9}{'b32 ms':>9}{'b32 x':>8}{'top-1':>8}{'time s':>8}"
    print(header)
    for name, path, rows, calibration in models:
        eval_csv, calibration_csv = out / f"{name}-eval.csv", out / f"{name}-calibration.csv"
        for data, csv in ((rows, eval_csv), (calibration, calibration_csv)):
            np.savetxt(csv, data, delimiter=",", header=",".join(f"f{i}" for i in range(data.shape[1])),
                       comments="")
        variants = []
        for mode in ("int8-dynamic", "int8-static", "fp16"):
            sluice_path = out / f"{name}-sluice-{mode}.onnx"
            started = time.perf_counter()
            subprocess.run([str(SERVER), "optimize", "--model", str(path), "--output", str(sluice_path),
                            "--mode", mode, "--eval", str(eval_csv), "--calibration", str(calibration_csv),
                            "--threads", str(THREADS),
                            "--report", str(out / f"{name}-sluice-{mode}.json")],
                           check=True, stdout=subprocess.DEVNULL)
            short = {"int8-dynamic": "int8 dyn", "int8-static": "int8 st", "fp16": "fp16"}[mode]
            variants.append((f"sluice {short}", sluice_path, time.perf_counter() - started))
            ort_path = out / f"{name}-ort-{mode}.onnx"
            started = time.perf_counter()
            if mode == "fp16":
                converted = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
                onnx.save(converted, str(ort_path))
            elif mode == "int8-static":
                input_name = session(path).get_inputs()[0].name
                quantize_static(str(path), str(ort_path), Rows(input_name, calibration),
                                quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"],
                                per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
            else:
                quantize_dynamic(str(path), str(ort_path), weight_type=QuantType.QInt8,
                                 per_channel=True, reduce_range=True)
            variants.append((f"ort {short}", ort_path, time.perf_counter() - started))
        figures = measure([path] + [v[1] for v in variants], rows)
        base = figures[0]
        results = [("fp32", base, None)] + [(v[0], m, v[2]) for v, m in zip(variants, figures[1:])]
        for variant, m, seconds in results:
            print(f"{name:<12}{variant:<14}{m['size'] / 1024:>10.1f}{m['size'] / base['size']:>8.3f}"
                  f"{m['b1']:>9.4f}{m['b32']:>9.4f}{base['b32'] / m['b32']:>8.2f}{m['agreement']:>8.4f}"
                  f"{'' if seconds is None else f'{seconds:8.2f}':>8}")
    print(f"(agreement rows: digits-mlp {len(digits_rows)} held-out digits; wide and mlp 1000 random normal rows; "
          f"INT8 static calibrated on digits-mlp's first {len(digits_calibration)} training rows and 500 other "
          "random rows for wide and mlp)")


if __name__ == "__main__":
    sys.exit(main())
