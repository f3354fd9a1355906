"""Graceful shutdown: SIGTERM lets in-flight requests finish, then the server exits 0.

This test starts its own server, since it has to stop it; the session's server is
checked the same way (exit 0 within 10 s) at the end of the run.
"""

import json
import threading
import time

import numpy as np

from fixture_models import assert_tensor_matches, load_reference
from server_process import start_server

IN_FLIGHT = 4


def test_sigterm_drains_in_flight_requests(tmp_path):
    server = start_server(tmp_path / "server.log")
    reference = load_reference("slow", "1")
    body = json.dumps({"inputs": [{"name": name, **tensor} for name, tensor in reference["inputs"].items()]})
    results = [None] * IN_FLIGHT

    def send(index):
        try:
            results[index] = server.request("POST", "/v2/models/slow/infer", body=body, timeout=30)
        except OSError as error:  # reported below with the other results
            results[index] = error

    threads = [threading.Thread(target=send, args=(i,)) for i in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    # Each run of slow takes tens of milliseconds, so some of these requests are
    # still queued or running when the signal arrives.
    time.sleep(0.05)
    code = server.terminate()
    for thread in threads:
        thread.join(timeout=30)

    assert code == 0, f"exit code {code} on SIGTERM:\n{server.log_tail()}"
    expected = reference["outputs"]["logits"]
    for index, response in enumerate(results):
        assert not isinstance(response, OSError), f"request {index} failed: {response!r}"
        assert response.status == 200, (index, response.status, response.body)
        (output,) = json.loads(response.body)["outputs"]
        logits = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
        assert_tensor_matches("slow", "logits", logits, expected, output["datatype"])
