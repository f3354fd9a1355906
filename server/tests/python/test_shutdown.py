"""Graceful shutdown: SIGTERM lets in-flight requests finish, then the server exits 0.

This test starts its own server, since it has to stop it; the session's server is
checked the same way (exit 0 within 10 s) at the end of the run.
"""

import http.client
import json
import threading
import time

import numpy as np

from fixture_models import assert_tensor_matches, load_reference
from server_process import start_server

IN_FLIGHT = 8


def test_sigterm_drains_in_flight_requests(tmp_path):
    server = start_server(tmp_path / "server.log")
    reference = load_reference("slow", "1")
    body = json.dumps(
        {"inputs": [{"name": name, **tensor} for name, tensor in reference["inputs"].items()]}
    )
    results = [None] * IN_FLIGHT
    sent = [threading.Event() for _ in range(IN_FLIGHT)]

    def send(index):
        connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
        try:
            # A first request on the same keep-alive connection makes sure the server
            # has accepted it before the signal, so the test does not race the
            # server's accept loop.
            connection.request("GET", "/v2/health/live")
            connection.getresponse().read()
            connection.request("POST", "/v2/models/slow/infer", body=body)
            sent[index].set()
            response = connection.getresponse()
            results[index] = (response.status, response.read())
        except OSError as error:  # reported below with the other results
            results[index] = error
        finally:
            sent[index].set()
            connection.close()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(IN_FLIGHT)]
    for thread in threads:
        thread.start()
    for event in sent:
        event.wait(timeout=10)
    # Every request has been written; give the server a moment to read them. A run
    # of slow takes tens of milliseconds, so some requests are still queued or running
    # when the signal arrives.
    time.sleep(0.05)
    code = server.terminate()
    for thread in threads:
        thread.join(timeout=30)

    assert code == 0, f"exit code {code} on SIGTERM:\n{server.log_tail()}"
    expected = reference["outputs"]["logits"]
    for index, response in enumerate(results):
        assert not isinstance(response, OSError), f"request {index} failed: {response!r}"
        status, body = response
        assert status == 200, (index, status, body)
        (output,) = json.loads(body)["outputs"]
        logits = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
        assert_tensor_matches("slow", "logits", logits, expected, output["datatype"])
