"""Connection rotation with the third-party clients callers use: tritonclient over
HTTP (a keep-alive connection pool) and over gRPC (grpc C-core, one channel shared
by several threads). With a short --max-connection-age-seconds the server rotates
their connections many times, and not one call fails: HTTP/1.1 clients get
`Connection: close` on an answer, gRPC clients a graceful GOAWAY that C-core
handles by itself (it retries what the server never started, with no help from
the caller).
"""

import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from server_process import start_server
from test_metrics import scrape

MAX_AGE = "0.3"
LOAD_S = 3.0
THREADS = 4


def rotated(server, protocol):
    """sluice_connections_rotated_total{protocol} on the server's /metrics."""
    return sum(
        value
        for name, labels, value in scrape(server)
        if name == "sluice_connections_rotated_total" and labels.get("protocol") == protocol
    )


def call_for(seconds, call):
    """Calls `call` back to back for `seconds`; returns (answers, failures)."""
    answers, failures = 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            call()
            answers += 1
        except Exception as error:  # noqa: BLE001 - every failure is the finding
            failures.append(repr(error))
    return answers, failures


def in_threads(call):
    """`call_for(LOAD_S, call)` in THREADS threads; summed answers and failures."""
    results = [None] * THREADS

    def run(index):
        results[index] = call_for(LOAD_S, call)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(r[0] for r in results), [f for r in results for f in r[1]]


def test_tritonclient_http_and_grpc_callers_are_rotated_without_a_failed_call(tmp_path):
    server = start_server(
        tmp_path / "server.log",
        extra_args=("--max-connection-age-seconds", MAX_AGE),
    )
    try:
        row = np.linspace(0.0, 1.5, 16, dtype=np.float32).reshape(1, 16)

        http = httpclient.InferenceServerClient(server.http_url, network_timeout=30.0)
        http_input = httpclient.InferInput("input", [1, 16], "FP32")
        http_input.set_data_from_numpy(row)
        answers, failures = call_for(LOAD_S, lambda: http.infer("mlp", [http_input]))
        http.close()
        assert failures == [], failures
        assert rotated(server, "http1") >= 5, f"{answers} answers, too few rotations"

        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        grpc_input = grpcclient.InferInput("input", [1, 16], "FP32")
        grpc_input.set_data_from_numpy(row)
        answers, failures = in_threads(lambda: grpc.infer("mlp", [grpc_input]))
        grpc.close()
        assert failures == [], failures[:5]
        assert rotated(server, "grpc") >= 5, f"{answers} answers, too few rotations"
    finally:
        assert server.terminate() == 0, server.log_tail()
